"""Learned metrics on disk: one file format and the ``runs/`` cache built on it.

* :func:`save_metric` / :func:`load_metric`: ``<name>.npz`` (the components ``G`` and
  the metadata as JSON text, no pickles) with a readable ``<name>.json`` beside it;
  :func:`metric_to_bytes` for downloads. Every write is atomic (write beside, rename).
* :func:`run_key`, :func:`cached_metric`, :func:`store_metric`: the cache of learned
  metrics under ``runs/`` (``$ARML_RUNS_DIR``), keyed by data set, method and fit
  settings, shared by the app, the CLI and ``reproduce``. A corrupt or stale file is
  reported with a warning and ignored, never raised.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


def versions() -> dict:
    import sklearn
    import torch

    from . import __version__

    return {"arml_core": __version__, "numpy": np.__version__, "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metric_to_bytes(components, metadata: dict) -> bytes:
    """An ``.npz`` holding the components and the metadata (as JSON text)."""
    buf = io.BytesIO()
    meta = {"format_version": FORMAT_VERSION, **metadata}
    np.savez(buf, components=np.asarray(components, dtype=np.float64),
             metadata=np.array(json.dumps(meta, default=str)))
    return buf.getvalue()


def save_metric(path, components, *, dataset: str, method: str, params: dict | None = None,
                seed: int | None = None, fit_time: float | None = None, extra: dict | None = None) -> Path:
    """Write ``path`` (.npz) and a readable ``.json`` beside it; returns the .npz path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    G = np.asarray(components, dtype=np.float64)
    meta = {"dataset": dataset, "method": method, "params": params or {}, "seed": seed,
            "n_features": int(G.shape[1]), "n_components": int(G.shape[0]),
            "fit_time_s": fit_time, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(), **(extra or {})}
    _atomic_write(path, metric_to_bytes(G, meta))
    _atomic_write(path.with_suffix(".json"), json.dumps(
        {"format_version": FORMAT_VERSION, **meta}, indent=2, default=str).encode())
    return path


def load_metric(source, *, n_features: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a metric written by ``save_metric`` (a path or a binary file object).

    Raises ValueError with a readable message for anything that is not such a file or
    whose feature count differs from ``n_features``.
    """
    name = getattr(source, "name", str(source))
    try:
        with np.load(source, allow_pickle=False) as z:
            files = set(z.files)
            G = np.asarray(z["components"], dtype=np.float64) if "components" in files else None
            meta = json.loads(str(z["metadata"])) if "metadata" in files else {}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} is not a readable metric file (.npz): {str(exc)[:120]}") from None
    if G is None:
        raise ValueError(f"{name} holds no 'components' array: not a metric saved by ARML Explorer")
    if G.ndim != 2 or G.size == 0:
        raise ValueError(f"{name}: the components must be a non-empty 2-D array, got shape {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError(f"{name}: the components contain NaN or infinite values")
    if n_features is not None and G.shape[1] != n_features:
        raise ValueError(
            f"{name} is a metric for {G.shape[1]} features (data set "
            f"{meta.get('dataset', 'unknown')!r}) but the data have {n_features}"
        )
    return G, meta

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
