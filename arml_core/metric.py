"""Conversions between a Mahalanobis matrix ``M`` and its factor ``G`` (``M = G^T G``)."""
from __future__ import annotations

import numpy as np


def check_metric(M, n_features: int | None = None, *, name: str = "M") -> np.ndarray:
    """Validate a Mahalanobis matrix: square, finite, symmetric and PSD (to rounding)."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {M.shape}")
    if n_features is not None and M.shape[0] != n_features:
        raise ValueError(
            f"{name} is {M.shape[0]}x{M.shape[1]} but the data have {n_features} features"
        )
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    scale = max(1.0, float(np.abs(M).max()))
    if not np.allclose(M, M.T, atol=1e-8 * scale, rtol=1e-6):
        raise ValueError(f"{name} must be symmetric")
    M = 0.5 * (M + M.T)
    w = np.linalg.eigvalsh(M)
    if w.min() < -1e-8 * max(scale, float(w.max(initial=0.0))):
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {w.min():.3g})")
    return M


def components_from_metric(M) -> np.ndarray:
    """A factor ``G`` with ``G.T @ G == M`` (eigendecomposition; tiny negative eigenvalues clipped)."""
    M = check_metric(M)
    w, V = np.linalg.eigh(M)
    w = np.clip(w, 0.0, None)
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    keep = w > w.max(initial=0.0) * 1e-12 if w.size and w.max() > 0 else np.zeros_like(w, bool)
    if not keep.any():  # the zero metric: a single zero row keeps shapes valid
        return np.zeros((1, M.shape[0]))
    return (np.sqrt(w[keep])[:, None] * V[:, keep].T)


def metric_from_components(G) -> np.ndarray:
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2:
        raise ValueError(f"components must be a 2-D array, got shape {G.shape}")
    return G.T @ G
