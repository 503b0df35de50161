"""Pairwise similarity under a learned metric: attack, certified bounds, spectral defence.

A linear map ``W`` (a learner's ``components_``, shape ``(r, d)``) judges a pair
``(x_i, x_j)`` *similar* iff its squared distance

    D(x_i, x_j) = ||W x_i - W x_j||^2 <= gamma

(``ARML_NOTES.md`` section 8, after Huai et al., "On the Robustness of Metric
Learning: An Adversarial Perspective", ACM TKDD 16(5), 2022). This module holds:

* pair sampling (:func:`sample_pairs`) and the threshold ``gamma``, explicit or a
  quantile of training distances (:func:`threshold_from_quantile`,
  :func:`resolve_gamma`);
* the attack (:func:`pair_attack`, :func:`pair_attack_grid`): projected sign-gradient
  steps on ``D(x_i + delta_i, x_j + delta_j)`` under the coupled budget
  ``||delta_i||_inf + ||delta_j||_inf <= eps`` with both points kept in a box;
* the published first-order bound and the rigorous bound (:func:`pair_bounds`), and
  the certified pair radius derived from the latter (:func:`certified_pair_radii`);
* :class:`SpectralDefence`, the margin loss over pairs plus a penalty on the top
  eigenvalues of ``W^T W``.

Decisions and targets
---------------------
Every function that judges pairs takes an optional ``y_pair`` (``+1`` similar,
``-1`` dissimilar, e.g. from :func:`sample_pairs`). The *target* of a pair is its
label when ``y_pair`` is given, else its clean decision. The attack pushes pairs
whose target is "similar" apart and pulls the others together; it *succeeds* when
the decision after the attack disagrees with the target. With labels, a pair that is
already misjudged is a success at ``eps = 0`` and has certified radius 0, exactly
like a misclassified point in the K-NN robust error (notes, section 2); without
labels, success means the decision flipped.

Bounds (both in terms of the squared distance ``D``; ``u = x_i - x_j``)
----------------------------------------------------------------------
Any admissible perturbation changes ``u`` by ``s = delta_i - delta_j`` with
``||s||_inf <= ||delta_i||_inf + ||delta_j||_inf <= eps``.

* Rigorous (notes, section 8): by the triangle inequality
  ``|sqrt(D') - sqrt(D)| = | ||W(u + s)|| - ||W u|| | <= ||W s|| <= eps * B`` with
  ``B >= max_{||s||_inf <= 1} ||W s||``; both
  ``sqrt(d) * sigma_max(W)`` (``||s||_2 <= sqrt(d) ||s||_inf``) and the sum of the
  column norms of ``W`` (``||sum_k s_k W_k|| <= sum_k |s_k| ||W_k||``) are such
  bounds, and ``B`` is their minimum. So
  ``(max(0, sqrt(D) - eps B))^2 <= D' <= (sqrt(D) + eps B)^2`` for every
  perturbation, box or no box. Consequently no perturbation with
  ``eps < |sqrt(gamma) - sqrt(D)| / B`` can move ``D`` across ``gamma``: that is
  the certified pair radius (0 for a misjudged pair).
* Published first-order bound (AckMetric slides): ``D' <= D + 2 d eps lambda_max(W^T W)``.
  It drops the quadratic term ``s^T W^T W s``. Writing ``D' - D = s^T M (2u + s)``
  (``M = W^T W``) with ``2u + s = u + u'`` shows when it is nevertheless true: if the
  clean *and* the perturbed points lie in ``[0, 1]^d`` then ``||u + u'||_2 <= 2 sqrt(d)``
  and ``|D' - D| <= ||W s|| ||W (u + u')|| <= lambda_max sqrt(d) eps 2 sqrt(d)``, i.e.
  the published bound holds. It fails when the box is dropped (``box=None``) or is
  wider than 1 (e.g. raw pixel values): with ``W = I_1``, ``x_i = 1``, ``x_j = 0`` and no
  box, ``D' = (1 + eps)^2 > 1 + 2 eps``. :func:`pair_bounds` reports both, with the
  mirrored ``D - 2 d eps lambda_max`` for pull-together attacks.

The attack
----------
For a fixed split ``eps_i + eps_j = eps`` each point moves in its own l_inf ball of
radius ``eps_i`` (``eps_j``) intersected with the box, so the coupled constraint holds
by construction. Sign-gradient steps of size ``step_size`` on both points (the
gradient of ``D`` w.r.t. ``x_i`` is ``2 W^T W (x_i - x_j)`` and its negative w.r.t.
``x_j``; see :func:`pair_gradient`), each followed by the projection (a clamp), starting
from ``delta = 0``; the best iterate (largest ``D`` when pushing apart, smallest when
pulling together) is kept. The splits in ``splits`` (fractions of ``eps`` given to
``x_i``; default all on ``x_i``, half/half, all on ``x_j``) run in one batch and the best
per pair is returned. Without a box the split does not matter (every ``s`` with
``||s||_inf <= eps`` is reachable with any split), so a single split is run.
Everything is batched over pairs (and splits, and ``eps`` values in
:func:`pair_attack_grid`) in torch on the requested device; the steps run in float32
and the chosen perturbations are projected once more in float64, so the budget and
the box hold to float64 rounding.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from .device import resolve_device
from .learners import MahalanobisMixin, _check_labels, mark_diverged

__all__ = [
    "PairAttackGrid",
    "PairAttackResult",
    "PairBounds",
    "SpectralDefence",
    "certified_pair_radii",
    "pair_attack",
    "pair_attack_grid",
    "pair_bounds",
    "pair_distances",
    "pair_gradient",
    "resolve_gamma",
    "sample_pairs",
    "success_rate_curve",
    "threshold_from_quantile",
]

DEFAULT_SPLITS = (1.0, 0.5, 0.0)
PAIR_KINDS = ("balanced", "all", "similar", "dissimilar")
_MAX_ELEMENTS = 2**22  # (pair, split, feature) entries per attack batch


# ----------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------
def _as_points(name: str, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_pairs, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _check_pairs(W, X_i, X_j) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X_i, X_j = _as_points("X_i", X_i), _as_points("X_j", X_j)
    if X_i.shape != X_j.shape:
        raise ValueError(f"X_i and X_j must have the same shape, got {X_i.shape} and {X_j.shape}")
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D array (n_components, n_features), got shape {W.shape}")
    if W.shape[1] != X_i.shape[1]:
        raise ValueError(
            f"W has {W.shape[1]} columns but the points have {X_i.shape[1]} features; "
            "pass a learner's components_ (n_components, n_features)"
        )
    if not np.all(np.isfinite(W)):
        raise ValueError("W contains NaN or infinite values")
    return W, X_i, X_j


def _check_gamma(gamma) -> float:
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a non-negative number, got {gamma!r}") from None
    if not (math.isfinite(g) and g >= 0):
        raise ValueError(f"gamma must be a non-negative number, got {gamma!r}")
    return g


def _check_eps(eps, n: int) -> np.ndarray:
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim > 1 or (e.ndim == 1 and len(e) != n):
        raise ValueError(f"eps must be a number or one value per pair ({n}), got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"eps must be finite and non-negative, got {eps!r}")
    return np.broadcast_to(e, (n,)).copy()


def _check_y_pair(y_pair, n: int) -> np.ndarray | None:
    if y_pair is None:
        return None
    y = np.asarray(y_pair)
    if y.shape != (n,):
        raise ValueError(f"y_pair must hold one label per pair ({n}), got shape {y.shape}")
    if not np.all(np.isin(y, (-1, 1))):
        raise ValueError("y_pair must hold +1 (similar) or -1 (dissimilar) only")
    return y.astype(np.int64)


def _check_box(box, X_i: np.ndarray, X_j: np.ndarray) -> tuple[float, float] | None:
    if box is None:
        return None
    try:
        lo, hi = (float(b) for b in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be None or a pair (low, high), got {box!r}") from None
    if not (lo < hi) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"box must satisfy low < high, got {box!r}")
    for name, X in (("X_i", X_i), ("X_j", X_j)):
        if X.size and (X.min() < lo or X.max() > hi):
            raise ValueError(
                f"{name} has values outside the box ({lo:g}, {hi:g}): min {X.min():.4g}, "
                f"max {X.max():.4g}. Clip the points into the box (test points scaled with "
                "the training scaler may fall slightly outside [0, 1]) or pass box=None"
            )
    return lo, hi


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _tensor(a, dev) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=dev)


def _sq_dist(Wt: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    Z = U @ Wt.T
    return (Z * Z).sum(1)


# ----------------------------------------------------------------------------------------
# Pairs and thresholds
# ----------------------------------------------------------------------------------------
def sample_pairs(X, y, n_similar: int, n_dissimilar: int, *, random_state=None):
    """Seeded random pairs of rows of ``X``: same-class and different-class ones.

    A similar pair is a uniformly drawn point (among those whose class has another
    member) and a uniformly drawn *other* point of its class; a dissimilar pair is a
    uniformly drawn point and a uniformly drawn point of another class. Pairs are drawn
    with replacement (a pair may repeat); ``i != j`` always.

    Returns
    -------
    idx_i, idx_j : int arrays of length ``n_similar + n_dissimilar`` (similar first)
    y_pair : int array, ``+1`` for similar and ``-1`` for dissimilar pairs
    """
    X = _as_points("X", X)
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must hold one label per row of X ({len(X)}), got shape {y.shape}")
    for name, v in (("n_similar", n_similar), ("n_dissimilar", n_dissimilar)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    rng = check_random_state(random_state)
    classes, y_enc = np.unique(y, return_inverse=True)
    counts = np.bincount(y_enc, minlength=len(classes))
    order = np.argsort(y_enc, kind="stable")  # rows grouped by class
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(y), dtype=np.int64)  # position of each row inside its class block
    rank[order] = np.arange(len(y)) - start[y_enc[order]]

    parts_i, parts_j = [], []
    if n_similar:
        eligible = np.flatnonzero(counts[y_enc] >= 2)
        if len(eligible) == 0:
            raise ValueError("no class has two points: similar pairs cannot be drawn")
        a = rng.choice(eligible, size=n_similar)
        c = y_enc[a]
        r = rng.randint(0, counts[c] - 1)  # one of the other members, skipping a itself
        r = r + (r >= rank[a])
        parts_i.append(a)
        parts_j.append(order[start[c] + r])
    if n_dissimilar:
        if len(classes) < 2:
            raise ValueError("the labels hold a single class: dissimilar pairs cannot be drawn")
        a = rng.randint(0, len(y), size=n_dissimilar)
        c = y_enc[a]
        r = rng.randint(0, len(y) - counts[c])  # a position outside a's class block
        r = r + counts[c] * (r >= start[c])
        parts_i.append(a)
        parts_j.append(order[r])
    idx_i = np.concatenate(parts_i) if parts_i else np.zeros(0, dtype=np.int64)
    idx_j = np.concatenate(parts_j) if parts_j else np.zeros(0, dtype=np.int64)
    y_pair = np.concatenate([np.ones(n_similar, dtype=np.int64), -np.ones(n_dissimilar, dtype=np.int64)])
    return idx_i.astype(np.int64), idx_j.astype(np.int64), y_pair


def pair_distances(W, X_i, X_j, *, device: str = "cpu") -> np.ndarray:
    """Squared distances ``||W x_i - W x_j||^2`` of the rows of ``X_i`` and ``X_j``."""
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    dev = resolve_device(device)
    return _sq_dist(_tensor(W, dev), _tensor(X_i - X_j, dev)).cpu().numpy()


def threshold_from_quantile(W, X, y, q: float, *, pairs: str = "balanced", n_pairs: int = 2000,
                            random_state=0, device: str = "cpu") -> float:
    """``gamma`` as the ``q``-quantile of squared distances of training pairs under ``W``.

    ``pairs`` chooses the pairs: ``'balanced'`` (default) ``n_pairs // 2`` similar and
    ``n_pairs - n_pairs // 2`` dissimilar ones from :func:`sample_pairs`, so ``q = 0.5``
    sits between the two populations whatever the number of classes; ``'similar'`` or
    ``'dissimilar'``: ``n_pairs`` of that kind (e.g. ``q = 0.9`` of the similar ones
    judges 90% of similar training pairs similar); ``'all'``: every pair ``i < j`` when
    there are at most ``n_pairs`` of them, else ``n_pairs`` uniformly random pairs
    (``y`` may be None). The draw is seeded by ``random_state``.
    """
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise ValueError(f"q must be a number in [0, 1], got {q!r}") from None
    if not 0.0 <= qf <= 1.0:
        raise ValueError(f"q must be a number in [0, 1], got {q!r}")
    if pairs not in PAIR_KINDS:
        raise ValueError(f"pairs must be one of {PAIR_KINDS}, got {pairs!r}")
    n_pairs = _positive_int("n_pairs", n_pairs)
    X = _as_points("X", X)
    n = len(X)
    if pairs == "all":
        rng = check_random_state(random_state)
        if n < 2:
            raise ValueError("at least two points are needed to form a pair")
        if n * (n - 1) // 2 <= n_pairs:
            i, j = np.triu_indices(n, k=1)
        else:
            i = rng.randint(0, n, size=n_pairs)
            j = rng.randint(0, n - 1, size=n_pairs)
            j = j + (j >= i)
    else:
        if y is None:
            raise ValueError(f"pairs={pairs!r} needs the labels y")
        n_sim = {"balanced": n_pairs // 2, "similar": n_pairs, "dissimilar": 0}[pairs]
        i, j, _ = sample_pairs(X, y, n_sim, n_pairs - n_sim, random_state=random_state)
    d = pair_distances(W, X[i], X[j], device=device)
    return float(np.quantile(d, qf))


def resolve_gamma(gamma, W, X=None, y=None, **kwargs) -> float:
    """A number is returned as it is; a string ``'q0.5'`` (``'q'`` and a quantile in
    ``[0, 1]``) means :func:`threshold_from_quantile` ``(W, X, y, 0.5, **kwargs)``."""
    if isinstance(gamma, str):
        text = gamma.strip().lower()
        if not text.startswith("q"):
            raise ValueError(f"gamma must be a number or a quantile such as 'q0.5', got {gamma!r}")
        try:
            q = float(text[1:])
        except ValueError:
            raise ValueError(f"gamma must be a number or a quantile such as 'q0.5', got {gamma!r}") from None
        if X is None:
            raise ValueError(f"gamma={gamma!r} is a quantile of training distances: pass the training X")
        return threshold_from_quantile(W, X, y, q, **kwargs)
    return _check_gamma(gamma)


# ----------------------------------------------------------------------------------------
# Gradient, bounds, certified radii
# ----------------------------------------------------------------------------------------
def _grad_i(Wt: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """Gradient of ``||W u||^2`` w.r.t. ``x_i`` for rows ``u = x_i - x_j``: ``2 W^T W u``."""
    return 2.0 * (U @ Wt.T) @ Wt


def pair_gradient(W, X_i, X_j, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradients of ``D(x_i, x_j)`` w.r.t. ``x_i`` and ``x_j`` (the ones the
    attack follows): ``2 W^T W (x_i - x_j)`` and its negative."""
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    dev = resolve_device(device)
    g = _grad_i(_tensor(W, dev), _tensor(X_i - X_j, dev)).cpu().numpy()
    return g, -g


def _b_constant(W: np.ndarray) -> tuple[float, float]:
    """``(B, lambda_max(W^T W))`` with ``B = min(sqrt(d) sigma_max, sum of column norms)``."""
    if W.size == 0:
        return 0.0, 0.0
    sigma = float(np.linalg.norm(W, 2))
    B = min(math.sqrt(W.shape[1]) * sigma, float(np.linalg.norm(W, axis=0).sum()))
    return B, sigma * sigma


@dataclass
class PairBounds:
    """Bounds on the squared distance ``D'`` after any perturbation within ``eps``.

    ``published_*`` is the first-order bound ``D +/- 2 d eps lambda_max(W^T W)`` (valid
    when clean and perturbed points lie in ``[0, 1]^d``, violated in general);
    ``rigorous_*`` is ``(sqrt(D) +/- eps B)^2`` (the lower one clipped at 0), valid for
    every perturbation. ``published`` / ``rigorous`` pick, per pair, the side that
    matters for its attack direction (``+1`` push apart: upper; ``-1`` pull together:
    lower).
    """

    dist: np.ndarray
    eps: np.ndarray
    direction: np.ndarray
    B: float
    lambda_max: float
    published_upper: np.ndarray
    published_lower: np.ndarray
    rigorous_upper: np.ndarray
    rigorous_lower: np.ndarray

    @property
    def published(self) -> np.ndarray:
        return np.where(self.direction > 0, self.published_upper, self.published_lower)

    @property
    def rigorous(self) -> np.ndarray:
        return np.where(self.direction > 0, self.rigorous_upper, self.rigorous_lower)

    def _beyond(self, dist_after, bound, rtol: float) -> np.ndarray:
        dist_after = np.asarray(dist_after, dtype=np.float64)
        tol = rtol * np.maximum(1.0, np.abs(bound))
        return np.where(self.direction > 0, dist_after > bound + tol, dist_after < bound - tol)

    def exceeds_published(self, dist_after, *, rtol: float = 1e-9) -> np.ndarray:
        """Pairs whose attacked distance lies beyond the published bound (on the side of
        their attack direction)."""
        return self._beyond(dist_after, self.published, rtol)

    def exceeds_rigorous(self, dist_after, *, rtol: float = 1e-9) -> np.ndarray:
        """Pairs beyond the rigorous bound: always all False (a True is a bug)."""
        return self._beyond(dist_after, self.rigorous, rtol)


def pair_bounds(W, X_i, X_j, eps, *, direction=1) -> PairBounds:
    """Published and rigorous bounds on ``D(x_i + delta_i, x_j + delta_j)`` for every pair,
    over all ``||delta_i||_inf + ||delta_j||_inf <= eps`` (see the module docstring).

    ``direction``: ``+1`` (push apart), ``-1`` (pull together), or one per pair, e.g.
    :attr:`PairAttackResult.direction`.
    """
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    n, d = X_i.shape
    e = _check_eps(eps, n)
    direction = np.broadcast_to(np.asarray(direction), (n,)).astype(np.int64)
    if not np.all(np.isin(direction, (-1, 1))):
        raise ValueError("direction must be +1 (push apart) or -1 (pull together)")
    D = pair_distances(W, X_i, X_j)
    B, lam = _b_constant(W)
    root = np.sqrt(D)
    return PairBounds(
        dist=D, eps=e, direction=direction, B=B, lambda_max=lam,
        published_upper=D + 2.0 * d * e * lam,
        published_lower=np.maximum(D - 2.0 * d * e * lam, 0.0),
        rigorous_upper=(root + e * B) ** 2,
        rigorous_lower=np.maximum(root - e * B, 0.0) ** 2,
    )


def _targets(D: np.ndarray, gamma: float, y_pair: np.ndarray | None) -> np.ndarray:
    clean = np.where(D <= gamma, 1, -1)
    return clean if y_pair is None else y_pair


def certified_pair_radii(W, X_i, X_j, gamma, *, y_pair=None) -> np.ndarray:
    """Certified radius of every pair: ``|sqrt(gamma) - sqrt(D)| / B``, 0 for a misjudged pair.

    No perturbation with ``||delta_i||_inf + ||delta_j||_inf`` below the radius can bring
    the decision (``D <= gamma``) to disagree with the pair's target (its label
    ``y_pair``, else its clean decision). From the rigorous bound
    ``|sqrt(D') - sqrt(D)| <= eps B`` (module docstring). ``inf`` when ``B = 0``
    (``W = 0``: nothing moves any distance).
    """
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    g = _check_gamma(gamma)
    y_pair = _check_y_pair(y_pair, len(X_i))
    D = pair_distances(W, X_i, X_j)
    target = _targets(D, g, y_pair)
    correct = (D <= g) == (target > 0)
    B, _ = _b_constant(W)
    gap = np.abs(math.sqrt(g) - np.sqrt(D))
    radius = gap / B if B > 0 else np.full(len(D), np.inf)
    return np.where(correct, radius, 0.0)


def success_rate_curve(values, eps_grid) -> np.ndarray:
    """Fraction of pairs whose value is ``<= eps`` for each ``eps`` of ``eps_grid``.

    With :attr:`PairAttackGrid.min_eps` (``inf`` where the attack never succeeded) this
    is the attack's success rate; with :func:`certified_pair_radii` it is the fraction
    of pairs *not* certified, an upper bound on the success rate of any attack.
    """
    values = np.asarray(values, dtype=np.float64)
    grid = np.atleast_1d(np.asarray(eps_grid, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no pairs")
    if np.any(np.isnan(values)):
        raise ValueError("the values contain NaN")
    return (values[None, :] <= grid[:, None]).mean(axis=1)


# ----------------------------------------------------------------------------------------
# The attack
# ----------------------------------------------------------------------------------------
@dataclass
class PairAttackResult:
    """What :func:`pair_attack` found, one row per pair.

    ``delta_i`` / ``delta_j``: the perturbations (``X_i_adv = X_i + delta_i``, in the box);
    ``dist_before`` / ``dist_after``: squared distances ``D``; ``direction``: ``+1`` pushed
    apart, ``-1`` pulled together; ``target``: ``+1`` / ``-1`` the decision the attack
    tries to break (the label, else the clean decision); ``flipped``: the decision
    ``D <= gamma`` changed; ``success``: the decision after the attack disagrees with the
    target (equals ``flipped`` when no labels were given); ``split``: the fraction of
    ``eps`` spent on ``x_i`` by the best split.
    """

    X_i_adv: np.ndarray
    X_j_adv: np.ndarray
    delta_i: np.ndarray
    delta_j: np.ndarray
    dist_before: np.ndarray
    dist_after: np.ndarray
    direction: np.ndarray
    target: np.ndarray
    flipped: np.ndarray
    success: np.ndarray
    split: np.ndarray
    eps: np.ndarray
    gamma: float

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if self.success.size else float("nan")


def _check_splits(splits, box) -> np.ndarray:
    if box is None:
        return np.array([1.0])  # without a box every split reaches the same set of s
    s = np.unique(np.asarray(splits, dtype=np.float64).ravel())
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError(f"splits must be fractions in [0, 1], got {splits!r}")
    return s


def _run_attack(Wt, Xi, Xj, e, direction, splits, steps, step_size, box):
    """The batched core. Rows are pairs; all arguments are float64 tensors on one device
    (``e``: budget per pair, ``direction``: +-1 per pair, ``step_size``: per pair).

    The steps run in float32 (twice as fast, and the precision of a heuristic search
    does not matter); the chosen perturbations are then projected again, in float64,
    onto the exact budget and box, so the constraints hold to float64 rounding.
    Returns the adversarial points and the chosen split index per pair."""
    n, d = Xi.shape
    S = len(splits)
    f = splits.repeat_interleave(n)  # (S*n,) fraction of eps on x_i
    xi, xj = Xi.repeat(S, 1), Xj.repeat(S, 1)
    eps = e.repeat(S)
    ei = (f * eps)[:, None]
    ej = eps[:, None] - ei
    lo_i, hi_i, lo_j, hi_j = -ei.expand(-1, d), ei.expand(-1, d), -ej.expand(-1, d), ej.expand(-1, d)
    if box is not None:
        lo_i, hi_i = torch.maximum(lo_i, box[0] - xi), torch.minimum(hi_i, box[1] - xi)
        lo_j, hi_j = torch.maximum(lo_j, box[0] - xj), torch.minimum(hi_j, box[1] - xj)
    lo_i, hi_i, lo_j, hi_j = (b.contiguous() for b in (lo_i, hi_i, lo_j, hi_j))

    f32 = torch.float32
    W32 = Wt.to(f32)
    u0 = (xi - xj).to(f32)
    l_i, h_i, l_j, h_j = (b.to(f32) for b in (lo_i, hi_i, lo_j, hi_j))
    sgn = direction.repeat(S).to(f32)
    scale = (sgn * step_size.repeat(S).to(f32))[:, None]  # signed step per row
    push = (sgn > 0)[:, None]
    di, dj = torch.zeros_like(u0), torch.zeros_like(u0)
    best_i, best_j = di.clone(), dj.clone()
    best_val = torch.full((S * n,), -math.inf, dtype=f32, device=u0.device)
    # one GEMM per step with M = W^T W (d x d) when that is cheaper than two with W (r x d)
    M32 = (Wt.T @ Wt).to(f32) if 2 * Wt.shape[0] >= d else None
    for t in range(steps + 1):
        U = u0 + di - dj
        if M32 is None:
            Z = U @ W32.T
            D = (Z * Z).sum(1)
            MU = Z @ W32  # = U W^T W, half the gradient w.r.t. x_i
        else:
            MU = U @ M32
            D = (U * MU).sum(1)
        val = sgn * D  # maximise D when pushing apart, -D when pulling together
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        keep = better[:, None]
        torch.where(keep, di, best_i, out=best_i)
        torch.where(keep, dj, best_j, out=best_j)
        if t == steps:
            break
        g = torch.sign(MU)  # sign of dD/dx_i = 2 W^T W u; dD/dx_j is its negative
        if t == 0:  # identical points (u = 0) have no gradient: a push still has to move
            g = torch.where(push & (g == 0), torch.ones_like(g), g)
        g.mul_(scale)
        di.add_(g)
        torch.clamp(di, l_i, h_i, out=di)
        dj.sub_(g)
        torch.clamp(dj, l_j, h_j, out=dj)
    pick = best_val.view(S, n).argmax(0)
    rows = pick * n + torch.arange(n, device=Xi.device)
    # back to float64: iterates that sat on a float32-rounded face are put on the exact
    # face, then everything is projected onto the exact constraints
    tol = 1e-6 * max(1.0, float(Xi.abs().max()), float(Xj.abs().max()), float(e.max()))

    def exact(delta, lo, hi):
        delta = delta.to(Xi.dtype)
        delta = torch.where((delta - hi).abs() <= tol, hi, delta)
        delta = torch.where((delta - lo).abs() <= tol, lo, delta)
        return torch.clamp(delta, lo, hi)

    di = exact(best_i[rows], lo_i[rows], hi_i[rows])
    dj = exact(best_j[rows], lo_j[rows], hi_j[rows])
    xi_adv, xj_adv = Xi + di, Xj + dj
    if box is not None:  # x + (hi - x) may round one ulp past the box
        xi_adv, xj_adv = xi_adv.clamp(box[0], box[1]), xj_adv.clamp(box[0], box[1])
    return xi_adv, xj_adv, pick


def pair_attack(W, X_i, X_j, gamma, eps, *, steps: int = 50, step_size: float | None = None,
                box=(0.0, 1.0), y_pair=None, splits: Sequence[float] = DEFAULT_SPLITS,
                device: str = "auto", batch_size: int | None = None) -> PairAttackResult:
    """Projected sign-gradient attack on the similarity decision of every pair.

    Pushes pairs whose target is similar apart (ascent on ``D``) and pulls the others
    together (descent), under ``||delta_i||_inf + ||delta_j||_inf <= eps`` with both
    perturbed points in ``box`` (``None``: unbounded). See the module docstring for the
    budget splits.

    Parameters
    ----------
    W : (r, d) array, a learner's ``components_``.
    X_i, X_j : (n, d) arrays (or one pair as 1-D arrays) inside ``box``.
    gamma : float, the decision threshold on the squared distance.
    eps : float, or one budget per pair.
    steps : number of sign-gradient steps (the best iterate is kept).
    step_size : step in input units; default ``2.5 * eps / steps``.
    y_pair : optional +1 / -1 labels that set the targets (else the clean decisions).
    splits : fractions of ``eps`` given to ``x_i`` that are tried; the best is kept.
    device : 'auto', 'cpu' or 'cuda'.
    batch_size : pairs per torch batch; default: as many as keep about ``2**22``
        (pair, split, feature) entries in a batch (a few hundred MB).
    """
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    n = len(X_i)
    g = _check_gamma(gamma)
    e = _check_eps(eps, n)
    steps = _positive_int("steps", steps)
    if step_size is None:
        alpha = 2.5 * e / steps
    else:
        if not (isinstance(step_size, (int, float, np.floating)) and math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a positive number, got {step_size!r}")
        alpha = np.full(n, float(step_size))
    y_pair = _check_y_pair(y_pair, n)
    box = _check_box(box, X_i, X_j)
    split_values = _check_splits(splits, box)
    dev = resolve_device(device)

    D0 = pair_distances(W, X_i, X_j, device=dev)
    target = _targets(D0, g, y_pair)
    direction = np.where(target > 0, 1, -1)
    if batch_size is None:
        batch_size = max(1, _MAX_ELEMENTS // (len(split_values) * max(1, X_i.shape[1])))
    batch_size = _positive_int("batch_size", batch_size)
    Wt, splits_t = _tensor(W, dev), _tensor(split_values, dev)
    xi_adv, xj_adv = np.empty_like(X_i), np.empty_like(X_j)
    pick = np.zeros(n, dtype=np.int64)
    for s in range(0, n, batch_size):
        b = slice(s, s + batch_size)
        a_i, a_j, p = _run_attack(
            Wt, _tensor(X_i[b], dev), _tensor(X_j[b], dev), _tensor(e[b], dev), _tensor(direction[b], dev),
            splits_t, steps, _tensor(alpha[b], dev), box,
        )
        xi_adv[b], xj_adv[b], pick[b] = a_i.cpu().numpy(), a_j.cpu().numpy(), p.cpu().numpy()
    D1 = pair_distances(W, xi_adv, xj_adv, device=dev)
    after = D1 <= g
    return PairAttackResult(
        X_i_adv=xi_adv, X_j_adv=xj_adv, delta_i=xi_adv - X_i, delta_j=xj_adv - X_j,
        dist_before=D0, dist_after=D1, direction=direction, target=target,
        flipped=after != (D0 <= g), success=after != (target > 0),
        split=split_values[pick], eps=e, gamma=g,
    )


@dataclass
class PairAttackGrid:
    """:func:`pair_attack` over a grid of budgets.

    ``success[k, p]``: pair ``p`` was broken at a budget ``<= eps_grid[k]`` (a perturbation
    that succeeds at a smaller budget is admissible at a larger one, so the rows are
    cumulative); ``success_rate[k]``: their mean; ``min_eps[p]``: the smallest grid budget
    that broke pair ``p`` (``inf`` if none); ``dist_after[k, p]``: the attacked distance
    at ``eps_grid[k]`` itself; ``direction``, ``target``, ``dist_before`` as in
    :class:`PairAttackResult`.
    """

    eps_grid: np.ndarray
    success: np.ndarray
    success_rate: np.ndarray
    min_eps: np.ndarray
    dist_before: np.ndarray
    dist_after: np.ndarray
    direction: np.ndarray
    target: np.ndarray
    gamma: float


def pair_attack_grid(W, X_i, X_j, gamma, eps_grid, *, steps: int = 50, step_size: float | None = None,
                     box=(0.0, 1.0), y_pair=None, splits: Sequence[float] = DEFAULT_SPLITS,
                     device: str = "auto", batch_size: int | None = None) -> PairAttackGrid:
    """Run :func:`pair_attack` at every budget of ``eps_grid``: one call on the pairs
    repeated once per budget, so all budgets share the torch batches (``batch_size``
    as in :func:`pair_attack`, counted in pair-budget rows). ``step_size`` as in
    :func:`pair_attack`, default ``2.5 * eps / steps`` for each budget."""
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    n = len(X_i)
    grid = np.asarray(eps_grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ValueError(f"eps_grid must hold finite, non-negative budgets, got {eps_grid!r}")
    grid = np.unique(grid)
    y_pair = _check_y_pair(y_pair, n)
    k = len(grid)
    res = pair_attack(
        W, np.tile(X_i, (k, 1)), np.tile(X_j, (k, 1)), gamma, np.repeat(grid, n),
        steps=steps, step_size=step_size, box=box, y_pair=None if y_pair is None else np.tile(y_pair, k),
        splits=splits, device=device, batch_size=batch_size,
    )
    dist_after = res.dist_after.reshape(k, n)
    success = np.logical_or.accumulate(res.success.reshape(k, n), axis=0)
    first = np.where(success.any(0), success.argmax(0), -1)
    min_eps = np.where(first >= 0, grid[np.maximum(first, 0)], np.inf)
    return PairAttackGrid(
        eps_grid=grid, success=success, success_rate=success.mean(1) if n else np.full(k, np.nan),
        min_eps=min_eps, dist_before=res.dist_before[:n], dist_after=dist_after,
        direction=res.direction[:n], target=res.target[:n], gamma=res.gamma,
    )


# ----------------------------------------------------------------------------------------
# The spectral defence
# ----------------------------------------------------------------------------------------
class SpectralDefence(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """Margin loss over pairs plus a penalty on the top eigenvalues of ``W^T W``
    (Huai et al., TKDD 2022; ``ARML_NOTES.md`` section 8).

    Minimises, over the linear map ``W`` (``components_``),

        mean_{(i, j)} (1 + y_ij (D_ij - gamma))_+  +  penalty * sum_{k <= n_eigen} w_k lambda_k(W^T W)

    where ``y_ij = +1`` for same-class and ``-1`` for different-class pairs (a similar
    pair costs nothing once ``D_ij <= gamma - 1``, a dissimilar one once
    ``D_ij >= gamma + 1``), ``lambda_1 >= lambda_2 >= ...`` and ``w = eigen_weights``
    (default all ones). ``penalty=0`` is the plain margin loss. The training pairs
    (``n_pairs // 2`` similar, the rest dissimilar, :func:`sample_pairs`) are drawn once
    in ``fit`` with ``random_state``.

    Parameters
    ----------
    n_components : int or None, rows of ``W`` (None: ``n_features``); ``W`` starts as (the
        first rows of) the identity.
    gamma : float or ``'q<quantile>'`` (e.g. ``'q0.5'``: the quantile of the training
        pairs' distances under the initial ``W``, :func:`threshold_from_quantile` on the
        balanced training pairs); the value used is ``gamma_``. Default 2, as published.
    penalty : float >= 0, the weight of the eigenvalue term.
    n_eigen : int, how many of the largest eigenvalues are penalised.
    eigen_weights : sequence of ``n_eigen`` non-negative weights, or None (ones).
    n_pairs : int, training pairs.
    n_epochs, learning_rate : full-batch Adam on ``W``.
    device : 'auto', 'cpu' or 'cuda'.
    random_state : int, RandomState or None; nothing is seeded globally.
    callback : ``callback(epoch, loss)`` after every epoch (1-based); returning ``False``
        stops training.
    verbose : int, prints a line every ``max(1, n_epochs // 10)`` epochs when > 0.

    Attributes
    ----------
    components_, gamma_, loss_curve_ (total loss per epoch), margin_curve_ (the margin
    part), eigenvalues_ (of ``W^T W`` at the end, descending), n_iter_, converged_,
    stop_reason_, fit_time_, device_.
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        gamma: float | str = 2.0,
        penalty: float = 0.1,
        n_eigen: int = 1,
        eigen_weights: Sequence[float] | None = None,
        n_pairs: int = 2000,
        n_epochs: int = 300,
        learning_rate: float = 1e-2,
        device: str = "auto",
        random_state=None,
        callback: Callable[[int, float], object] | None = None,
        verbose: int = 0,
    ):
        self.n_components = n_components
        self.gamma = gamma
        self.penalty = penalty
        self.n_eigen = n_eigen
        self.eigen_weights = eigen_weights
        self.n_pairs = n_pairs
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.device = device
        self.random_state = random_state
        self.callback = callback
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _validate_params(self, n_features: int) -> np.ndarray:
        _positive_int("n_epochs", self.n_epochs)
        _positive_int("n_pairs", self.n_pairs)
        _positive_int("n_eigen", self.n_eigen)
        if self.n_components is not None:
            _positive_int("n_components", self.n_components)
            if self.n_components > n_features:
                raise ValueError(
                    f"n_components ({self.n_components}) cannot be greater than n_features ({n_features})"
                )
        rank = min(n_features, self.n_components or n_features)
        if self.n_eigen > rank:
            raise ValueError(f"n_eigen ({self.n_eigen}) cannot be greater than the rank of W ({rank})")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not (isinstance(self.penalty, (int, float)) and math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"penalty must be a non-negative number, got {self.penalty!r}")
        if self.eigen_weights is None:
            return np.ones(self.n_eigen)
        w = np.asarray(self.eigen_weights, dtype=np.float64).ravel()
        if len(w) != self.n_eigen:
            raise ValueError(f"eigen_weights must hold n_eigen ({self.n_eigen}) values, got {len(w)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"eigen_weights must be non-negative numbers, got {self.eigen_weights!r}")
        return w

    def _top_eigenvalues(self, G: torch.Tensor) -> torch.Tensor:
        """The ``n_eigen`` largest eigenvalues of ``W^T W``, differentiable in ``G``.

        They are those of the smaller ``G G^T`` (``r <= d``). With its top eigenvectors
        ``u_k`` found without autograd, ``lambda_k = ||G^T u_k||^2`` has the value and
        the gradient ``2 u_k u_k^T G`` of the eigenvalue (Hellmann-Feynman); at tied
        eigenvalues (the identity start) that is a subgradient. Cheaper than
        differentiating an SVD. NaN when the decomposition fails (a diverged ``G``)."""
        try:
            with torch.no_grad():
                _, V = torch.linalg.eigh(G @ G.T)
        except torch.linalg.LinAlgError:
            return torch.full((self.n_eigen,), float("nan"), device=G.device)
        U = V[:, -self.n_eigen:].flip(1)  # eigenvectors of the largest eigenvalues first
        return ((U.T @ G) ** 2).sum(1)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        weights = self._validate_params(X.shape[1])
        _check_labels(y)
        dev = resolve_device(self.device)
        self.device_ = str(dev)
        rng = check_random_state(self.random_state)
        n, d = X.shape
        r = d if self.n_components is None else self.n_components
        G0 = np.eye(r, d)
        self.gamma_ = resolve_gamma(self.gamma, G0, X, y, random_state=rng.randint(0, 2**31 - 1))

        n_sim = self.n_pairs // 2
        if np.bincount(np.unique(y, return_inverse=True)[1]).max() < 2:
            n_sim = 0  # every class is a singleton: only dissimilar pairs exist
        pi, pj, yp = sample_pairs(X, y, n_sim, self.n_pairs - n_sim, random_state=rng)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        U = Xt[torch.as_tensor(pi, device=dev)] - Xt[torch.as_tensor(pj, device=dev)]
        Y = torch.as_tensor(yp, dtype=torch.float32, device=dev)
        alphas = torch.as_tensor(float(self.penalty) * weights, dtype=torch.float32, device=dev)
        use_penalty = bool(self.penalty > 0 and np.any(weights > 0))
        G = torch.as_tensor(G0, dtype=torch.float32, device=dev).requires_grad_(True)
        opt = torch.optim.Adam([G], lr=float(self.learning_rate))

        self.loss_curve_, self.margin_curve_ = [], []
        self.converged_ = True
        self.stop_reason_ = "completed"
        last_good = G.detach().clone()
        start = time.perf_counter()
        epoch = 0
        for epoch in range(1, self.n_epochs + 1):
            Z = U @ G.T
            D = (Z * Z).sum(1)
            margin = torch.relu(1.0 + Y * (D - self.gamma_)).mean()
            loss = margin
            value = float(loss.detach())
            if use_penalty and math.isfinite(value):
                lam = self._top_eigenvalues(G)
                loss = loss + (alphas * lam).sum()
                value = float(loss.detach())
            if math.isfinite(value):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not (math.isfinite(value) and bool(torch.isfinite(G).all())):
                with torch.no_grad():
                    G.copy_(last_good)
                mark_diverged(self, "SpectralDefence", epoch)
                epoch -= 1
                break
            last_good = G.detach().clone()
            self.loss_curve_.append(value)
            self.margin_curve_.append(float(margin.detach()))
            if self.verbose and (epoch % max(1, self.n_epochs // 10) == 0 or epoch == 1):
                print(f"[Spectral] epoch {epoch:5d}/{self.n_epochs}  loss {value:.6f}  "
                      f"margin {self.margin_curve_[-1]:.6f}  ({time.perf_counter() - start:.1f} s)")
            if self.callback is not None and self.callback(epoch, value) is False:
                self.stop_reason_ = f"stopped by the callback at epoch {epoch}"
                break

        self.components_ = last_good.double().cpu().numpy()
        self.eigenvalues_ = np.sort(np.linalg.eigvalsh(self.components_.T @ self.components_))[::-1]
        self.n_iter_ = epoch
        self.fit_time_ = time.perf_counter() - start
        return self
