"""A disk cache of learned metrics under ``runs/``, keyed by data set, method and settings."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from .io import load_metric, save_metric


def run_key(dataset: str, method: str, settings: dict) -> str:
    blob = json.dumps({"dataset": dataset, "method": method, **settings}, sort_keys=True, default=str)
    return f"{dataset}__{method}__{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cached_metric(runs_dir, dataset: str, method: str, settings: dict, n_features: int):
    """(components, metadata) of a saved run, or None. A corrupt or stale file is
    reported with a warning and ignored, never raised."""
    path = Path(runs_dir) / (run_key(dataset, method, settings) + ".npz")
    if not path.exists():
        return None
    try:
        return load_metric(path, n_features=n_features)
    except ValueError as exc:
        warnings.warn(f"ignoring the saved run {path.name}: {exc}", stacklevel=2)
        return None


def store_metric(runs_dir, dataset: str, method: str, settings: dict, components: np.ndarray,
                 fit_time: float, info: dict | None = None) -> Path:
    path = Path(runs_dir) / (run_key(dataset, method, settings) + ".npz")
    return save_metric(path, components, dataset=dataset, method=method, params=settings,
                       seed=settings.get("seed"), fit_time=fit_time, extra={"info": info or {}})
