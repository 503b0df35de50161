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

import math

import numpy as np

#: The range rule of :func:`check_metric_scale`: squared distances stay below
#: ``MAX_SQ_DISTANCE`` for points whose coordinates differ by at most ``DATA_SPAN``,
#: and a non-zero metric's largest entry is at least ``MIN_SCALE``.
MAX_SQ_DISTANCE = 1e100
MIN_SCALE = 1e-100
DATA_SPAN = 2.0


def _check_real(A, name: str) -> None:
    if np.iscomplexobj(A):
        raise ValueError(f"complex values in {name}; a Mahalanobis metric is real: pass a real matrix")


def check_metric_scale(scale: float, n_features: int, *, name: str = "M") -> None:
    """The range rule for a metric whose largest entry is ``scale`` (``max_i M_ii``, which
    for a PSD ``M = G^T G`` is its largest ``|M_ij|`` and the largest squared column norm
    of ``G``) on ``n_features`` = D features.

    Accepted: ``scale == 0`` (the zero metric) or ``MIN_SCALE <= scale <=
    MAX_SQ_DISTANCE / (D^2 R^2)`` with ``R = DATA_SPAN = 2``. Why: the data are min-max
    scaled to [0, 1] (test points a little outside), so two points differ by at most R
    per coordinate and ``d_M(a, b) <= scale * (sum_i |a_i - b_i|)^2 <= scale D^2 R^2 <=
    1e100``; the distances, their squares and the certifier's and the QP's products
    (``||M (p - n)||^2``) then stay below 1e200, far from float64's 1.8e308; and a unit
    step costs at least 1e-100, whose square is far above the underflow at 2.2e-308.
    Scaling ``M`` by a constant changes neither the K-NN nor its robust radii, so a metric
    outside the range only needs rescaling. Raises ``ValueError`` otherwise.
    """
    if scale != 0:
        _check_log_scale(math.log10(scale), n_features, name)


def _check_log_scale(log_scale: float, n_features: int, name: str) -> None:
    """:func:`check_metric_scale` for ``log10(scale)`` (a scale beyond float64 is reported too)."""
    log_upper = math.log10(MAX_SQ_DISTANCE / (max(int(n_features), 1) ** 2 * DATA_SPAN**2))
    if math.log10(MIN_SCALE) <= log_scale <= log_upper:
        return
    def shown(v: float) -> str:
        exponent = math.floor(v)
        mantissa = f"{10 ** (v - exponent):.3g}"
        return f"1e{exponent + 1:+d}" if mantissa == "10" else f"{mantissa}e{exponent:+d}"
    raise ValueError(
        f"{name}: its largest entry, {shown(log_scale)}, is outside the range in which squared distances "
        f"stay finite ({MIN_SCALE:.0e} to {shown(log_upper)} for {n_features} features, or 0); rescale it "
        "(a constant factor changes neither the K-NN nor its robust radii)."
    )


def check_components(G, n_features: int | None = None, *, name: str = "the components") -> np.ndarray:
    """Validate components ``G`` (real, 2-D, non-empty, finite, ``M = G^T G`` within the
    range rule of :func:`check_metric_scale`, computed without overflow); returns float64 ``G``."""
    _check_real(G, name)
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError(f"{name} contain NaN or infinite values")
    if n_features is not None and G.shape[1] != n_features:
        raise ValueError(f"{name} are for {G.shape[1]} features but the data have {n_features}")
    g = float(np.abs(G).max())
    if g > 0:  # max_i M_ii = g^2 max_i sum_k (G_ki / g)^2, in logarithms: no overflow on the way
        log_scale = 2 * math.log10(g) + math.log10(float(((G / g) ** 2).sum(axis=0).max()))
        _check_log_scale(log_scale, G.shape[1], f"the metric M = G^T G of {name}")
    return G


def check_metric(M, n_features: int | None = None, *, name: str = "M") -> np.ndarray:
    """Validate a Mahalanobis matrix: real, square, finite, within the range rule of
    :func:`check_metric_scale`, symmetric and PSD (to rounding: ``1e-8`` relative to its
    largest entry, so that ``c M`` passes exactly when ``M`` does)."""
    _check_real(M, name)
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {M.shape}")
    if n_features is not None and M.shape[0] != n_features:
        raise ValueError(
            f"{name} is {M.shape[0]}x{M.shape[1]} but the data have {n_features} features"
        )
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    scale = float(np.abs(M).max(initial=0.0))
    check_metric_scale(scale, M.shape[0], name=name)
    # tolerances relative to the largest entry (no absolute floor): rescaling M by c > 0
    # neither accepts nor rejects anything new (the zero metric has scale 0 and passes)
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
    """``M = G^T G`` from components ``G`` (shape ``(n_components, n_features)``; real)."""
    _check_real(G, "the components")
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
