"""Evaluation: robust-error tables (``evaluate``), the paper's reproduction (``reproduce``: its ``plan``, its
``results_folder`` merged and replaced atomically) and its summary."""
from .evaluate import (Evaluation, MethodResult, clean_error, evaluate, fit_metric, misclassified, parse_grid,
                       radii_for, robust_error_table)

__all__ = ["Evaluation", "MethodResult", "clean_error", "evaluate", "fit_metric", "misclassified", "parse_grid",
           "radii_for", "robust_error_table"]
