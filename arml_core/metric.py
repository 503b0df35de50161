"""The Mahalanobis metric and the quantities defined by it alone.

A metric is ``M = G^T G`` (``G``: a learner's ``components_``, shape
``(n_components, n_features)``); ``d_M(a, b) = (a - b)^T M (a - b)`` is the *squared*
Mahalanobis distance. This module converts between ``M`` and ``G``
(:func:`check_metric`, :func:`components_from_metric`, :func:`metric_from_components`),
holds the paper's central quantity, the triplet margin ``eps_t``
(:func:`triplet_margin`, ARML_NOTES section 3), and turns per-point radii into a
robust-error curve (:func:`robust_error_curve`, section 2). Each formula is written
here once; the certifier, the exact solver, ARML and the attacks call these.
"""
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
    """``M = G^T G`` from components ``G`` (shape ``(n_components, n_features)``)."""
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2:
        raise ValueError(f"components must be a 2-D array, got shape {G.shape}")
    return G.T @ G


def triplet_margin(d_xn, d_xp, *, denominator=None, inv_denominator=None):
    """The signed triplet margin ``eps_t`` (ARML_NOTES section 3, without the clamp):

        eps_t(p, n, x) = (d_M(x, n) - d_M(x, p)) / (2 ||M (p - n)||),

    the Euclidean distance from ``x`` to the bisector of ``p`` and ``n`` under ``M``
    (positive on ``p``'s side). ``d_xn`` and ``d_xp`` are squared Mahalanobis distances;
    give the pair's ``denominator`` ``2 ||M (p - n)||`` or its reciprocal
    ``inv_denominator`` (precomputed reciprocals are how the certifier reuses them; a 0
    there drops a degenerate pair). numpy arrays or torch tensors, broadcast as usual.
    """
    if (denominator is None) == (inv_denominator is None):
        raise ValueError("give exactly one of denominator and inv_denominator")
    eps = d_xn - d_xp
    if denominator is not None:
        return eps / denominator  # out of place: autograd (ARML) differentiates through it
    eps *= inv_denominator  # in place: the certifier's large blocks
    return eps


def robust_error_curve(radii, grid) -> np.ndarray:
    """Robust error at each radius ``r`` of ``grid``: the fraction of points whose radius
    (exact, certified, an attack's norm, a pair's budget) is ``<= r`` (ARML_NOTES
    section 2). A point with radius 0 (misclassified) counts at every ``r``, one with
    ``inf`` (a failed attack) at none, so the value at ``r = 0`` is the clean error."""
    radii = np.asarray(radii, dtype=float)
    grid = np.atleast_1d(np.asarray(grid, dtype=float))
    if radii.size == 0:
        raise ValueError("no radii: the test set is empty")
    if np.any(np.isnan(radii)):
        raise ValueError(
            f"{int(np.isnan(radii).sum())} radii are NaN (a solver did not converge); "
            "a robust error cannot be computed from them"
        )
    return (radii[None, :] <= grid[:, None]).mean(axis=1)
