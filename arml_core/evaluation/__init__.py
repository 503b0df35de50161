"""Evaluation: robust-error tables (``evaluate``), the paper's reproduction (``reproduce``) and its summary."""
from .evaluate import Evaluation, MethodResult, evaluate, fit_metric, parse_grid, radii_for

__all__ = ["Evaluation", "MethodResult", "evaluate", "fit_metric", "parse_grid", "radii_for"]
