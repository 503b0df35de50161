"""Pairwise similarity under a learned metric (``ARML_NOTES.md`` section 8, after Huai et
al., "On the Robustness of Metric Learning: An Adversarial Perspective", ACM TKDD 16(5), 2022).

A linear map ``W`` (a learner's ``components_``, shape ``(r, d)``) judges a pair
``(x_i, x_j)`` *similar* iff ``D(x_i, x_j) = ||W x_i - W x_j||^2 <= gamma``. Here: pairs and
``gamma`` (:func:`sample_pairs`, :func:`threshold_from_quantile`, :func:`resolve_gamma`); the
published and rigorous bounds, with their maths (:func:`pair_bounds`), and the certified pair
radius; the attack, with its method, targets and success (:func:`pair_attack`,
:func:`pair_attack_grid`); both curves of a metric (:func:`pair_robustness_curves`). The
spectral defence, a learner, is :class:`arml_core.learners.SpectralDefence`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.utils import check_random_state

from .device import resolve_device
from .metric import robust_error_curve

__all__ = ["PairAttackGrid", "PairAttackResult", "PairBounds", "certified_pair_radii", "pair_attack",
           "pair_attack_grid", "pair_bounds", "pair_distances", "pair_gradient", "pair_robustness_curves",
           "resolve_gamma", "sample_pairs", "threshold_from_quantile"]

DEFAULT_SPLITS = (1.0, 0.5, 0.0)
PAIR_KINDS = ("balanced", "all", "similar", "dissimilar")
_MAX_ELEMENTS = 2**22  # (pair, split, feature) entries per attack batch


# -- validation helpers --------------------------------------------------------------------
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
        raise ValueError(f"W has {W.shape[1]} columns but the points have {X_i.shape[1]} features; "
                         "pass a learner's components_ (n_components, n_features)")
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


def _check_scalar_box(box, X_i: np.ndarray, X_j: np.ndarray) -> tuple[float, float] | None:
    """One scalar ``(low, high)``, ``low < high``, that holds both ``X_i`` and ``X_j``, or None
    (kept apart from ``_validation.check_box``: that one is per-feature, allows ``lo == hi``
    and words its errors for K-NN test points)."""
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
            raise ValueError(f"{name} has values outside the box ({lo:g}, {hi:g}): min {X.min():.4g}, "
                             f"max {X.max():.4g}. Clip the points into the box (test points scaled with "
                             "the training scaler may fall slightly outside [0, 1]) or pass box=None")
    return lo, hi


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _tensor(a, dev) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=dev)


# -- pairs and thresholds ------------------------------------------------------------------
def sample_pairs(X, y, n_similar: int, n_dissimilar: int, *, random_state=None):
    """Seeded random pairs of rows of ``X``: ``idx_i, idx_j, y_pair``, ``n_similar`` same-class
    pairs then ``n_dissimilar`` different-class ones (``y_pair``: ``+1`` / ``-1``).

    A similar pair is a uniformly drawn point (among those whose class has another member)
    and a uniformly drawn *other* point of its class; a dissimilar pair is a uniformly drawn
    point and a uniformly drawn point of another class. Drawn with replacement (a pair may
    repeat); ``i != j`` always."""
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
    Z = _tensor(X_i - X_j, dev) @ _tensor(W, dev).T
    return (Z * Z).sum(1).cpu().numpy()


def threshold_from_quantile(W, X, y, q: float, *, pairs: str = "balanced", n_pairs: int = 2000,
                            random_state=0, device: str = "cpu") -> float:
    """``gamma`` as the ``q``-quantile of squared distances of training pairs under ``W``.

    ``pairs``: ``'balanced'`` (default) ``n_pairs // 2`` similar and ``n_pairs - n_pairs // 2``
    dissimilar ones from :func:`sample_pairs`, so ``q = 0.5`` sits between the two populations
    whatever the number of classes; ``'similar'`` or ``'dissimilar'``: ``n_pairs`` of that kind
    (``q = 0.9`` of the similar ones judges 90% of similar training pairs similar); ``'all'``:
    every pair ``i < j`` if there are at most ``n_pairs``, else ``n_pairs`` uniformly random
    pairs (``y`` may be None). The draw is seeded by ``random_state``."""
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
        try:
            if not text.startswith("q"):
                raise ValueError(gamma)
            q = float(text[1:])
        except ValueError:
            raise ValueError(f"gamma must be a number or a quantile such as 'q0.5', got {gamma!r}") from None
        if X is None:
            raise ValueError(f"gamma={gamma!r} is a quantile of training distances: pass the training X")
        return threshold_from_quantile(W, X, y, q, **kwargs)
    return _check_gamma(gamma)


# -- gradient, bounds, certified radii -----------------------------------------------------
def pair_gradient(W, X_i, X_j, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradients of ``D(x_i, x_j)`` w.r.t. ``x_i`` and ``x_j`` (the ones the
    attack follows): ``2 W^T W (x_i - x_j)`` and its negative."""
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    dev = resolve_device(device)
    Wt = _tensor(W, dev)
    g = (2.0 * (_tensor(X_i - X_j, dev) @ Wt.T) @ Wt).cpu().numpy()
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
    """Bounds on the squared distance ``D'`` after any perturbation within ``eps``
    (:func:`pair_bounds`): ``published_*`` ``D +/- 2 d eps lambda_max(W^T W)``, ``rigorous_*``
    ``(sqrt(D) +/- eps B)^2`` (lower ones clipped at 0). ``published`` / ``rigorous`` pick, per
    pair, the side of its attack direction (``+1`` push apart: upper; ``-1``: lower)."""

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
        """Pairs whose attacked distance lies beyond the published bound (on their side)."""
        return self._beyond(dist_after, self.published, rtol)

    def exceeds_rigorous(self, dist_after, *, rtol: float = 1e-9) -> np.ndarray:
        """Pairs beyond the rigorous bound: always all False (a True is a bug)."""
        return self._beyond(dist_after, self.rigorous, rtol)


def pair_bounds(W, X_i, X_j, eps, *, direction=1) -> PairBounds:
    """Published and rigorous bounds on ``D' = D(x_i + delta_i, x_j + delta_j)`` for every
    pair over all ``||delta_i||_inf + ||delta_j||_inf <= eps``; ``direction``: ``+1`` (push
    apart), ``-1`` (pull together), or one per pair (:attr:`PairAttackResult.direction`).

    With ``u = x_i - x_j`` a perturbation changes ``u`` by ``s = delta_i - delta_j``,
    ``||s||_inf <= eps``.

    * Rigorous (notes, section 8): ``|sqrt(D') - sqrt(D)| = | ||W(u + s)|| - ||W u|| | <=
      ||W s|| <= eps B`` with ``B >= max_{||s||_inf <= 1} ||W s||``: both ``sqrt(d)
      sigma_max(W)`` (``||s||_2 <= sqrt(d) ||s||_inf``) and the sum of the column norms of
      ``W`` (``||sum_k s_k W_k|| <= sum_k |s_k| ||W_k||``) are such bounds; ``B`` is their
      minimum. So ``(max(0, sqrt(D) - eps B))^2 <= D' <= (sqrt(D) + eps B)^2``, box or no box,
      and no ``eps < |sqrt(gamma) - sqrt(D)| / B`` moves ``D`` across ``gamma``: the
      certified pair radius (:func:`certified_pair_radii`).
    * Published, first-order (AckMetric slides): ``D' <= D + 2 d eps lambda_max(W^T W)``
      (``D - 2 d eps lambda_max`` pulling together). It drops ``s^T W^T W s``; with
      ``D' - D = s^T M (2u + s)``, ``2u + s = u + u'``, it holds when the clean *and* the
      perturbed points lie in ``[0, 1]^d`` (``|D' - D| <= ||W s|| ||W (u + u')|| <=
      lambda_max sqrt(d) eps 2 sqrt(d)``) and fails without the box or with a wider one: with
      ``W = I_1``, ``x_i = 1``, ``x_j = 0`` and no box, ``D' = (1 + eps)^2 > 1 + 2 eps``.
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

    No perturbation with ``||delta_i||_inf + ||delta_j||_inf`` below the radius can bring the
    decision (``D <= gamma``) to disagree with the pair's target (its label ``y_pair``, else
    its clean decision): the rigorous bound of :func:`pair_bounds`. ``inf`` when ``B = 0``.
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


# -- the attack ----------------------------------------------------------------------------
@dataclass
class PairAttackResult:
    """What :func:`pair_attack` found, one row per pair: the perturbations ``delta_i`` /
    ``delta_j`` (``X_i_adv = X_i + delta_i``, in the box); squared distances ``dist_before`` /
    ``dist_after``; ``direction`` (``+1`` pushed apart, ``-1`` pulled together); ``target``;
    ``flipped`` (the decision ``D <= gamma`` changed); ``success`` (it disagrees with the
    target); ``split`` (the fraction of ``eps`` spent on ``x_i`` by the best split)."""

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
    """The batched core of :func:`pair_attack`: rows are pairs, all arguments float64 tensors on
    one device (``e``, ``direction``, ``step_size``: one per pair), the steps in float32 (twice
    as fast; a heuristic search needs no more). The adversarial points and split per pair."""
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

    ``W``: ``(r, d)``, a learner's ``components_``; ``X_i``, ``X_j``: ``(n, d)`` (or one
    pair, 1-D) inside ``box`` (``None``: unbounded); ``gamma``: the threshold on ``D``;
    ``eps``: a budget, or one per pair. The *target* of a pair is its label ``y_pair``
    (``+1`` similar, ``-1`` dissimilar, e.g. from :func:`sample_pairs`) if given, else its
    clean decision. Pairs whose target is similar are pushed apart (ascent on ``D``), the
    others pulled together, under ``||delta_i||_inf + ||delta_j||_inf <= eps`` with both
    perturbed points in the box. The attack *succeeds* when the decision after it disagrees
    with the target: with labels, a misjudged pair is a success at ``eps = 0`` (certified
    radius 0), like a misclassified point in the K-NN robust error (notes, section 2);
    without, success means the decision flipped.

    For each split ``eps_i + eps_j = eps`` (``splits``: the fractions given to ``x_i``) each
    point moves in its own l_inf ball of radius ``eps_i`` (``eps_j``) and the box, so the
    coupled budget holds by construction: ``steps`` sign-gradient steps of ``step_size``
    (default ``2.5 * eps / steps``) on both points (``dD/dx_i = 2 W^T W (x_i - x_j) =
    -dD/dx_j``, :func:`pair_gradient`), each followed by the projection (a clamp), from
    ``delta = 0``; the best iterate (largest ``D`` pushing apart, smallest pulling) and the
    best split per pair are kept. Without a box every ``s`` with ``||s||_inf <= eps`` is
    reachable with any split, so one is run. Batched over pairs (and splits, and budgets in
    :func:`pair_attack_grid`) in torch on ``device``, ``batch_size`` pairs at a time (default:
    about ``2**22`` (pair, split, feature) entries, a few hundred MB); steps in float32, the
    chosen perturbations projected again in float64: budget and box hold to float64 rounding.
    """
    W, X_i, X_j = _check_pairs(W, X_i, X_j)
    n = len(X_i)
    g = _check_gamma(gamma)
    e = _check_eps(eps, n)
    steps = _positive_int("steps", steps)
    if step_size is not None and not (isinstance(step_size, (int, float, np.floating))
                                      and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    alpha = 2.5 * e / steps if step_size is None else np.full(n, float(step_size))
    y_pair = _check_y_pair(y_pair, n)
    box = _check_scalar_box(box, X_i, X_j)
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
        a_i, a_j, p = _run_attack(Wt, _tensor(X_i[b], dev), _tensor(X_j[b], dev), _tensor(e[b], dev),
                                  _tensor(direction[b], dev), splits_t, steps, _tensor(alpha[b], dev), box)
        xi_adv[b], xj_adv[b], pick[b] = a_i.cpu().numpy(), a_j.cpu().numpy(), p.cpu().numpy()
    D1 = pair_distances(W, xi_adv, xj_adv, device=dev)
    after = D1 <= g
    return PairAttackResult(X_i_adv=xi_adv, X_j_adv=xj_adv, delta_i=xi_adv - X_i, delta_j=xj_adv - X_j,
                            dist_before=D0, dist_after=D1, direction=direction, target=target,
                            flipped=after != (D0 <= g), success=after != (target > 0),
                            split=split_values[pick], eps=e, gamma=g)


@dataclass
class PairAttackGrid:
    """:func:`pair_attack` over a grid of budgets. ``success[k, p]``: pair ``p`` was broken at
    a budget ``<= eps_grid[k]`` (what succeeds at a smaller budget is admissible at a larger
    one: the rows are cumulative); ``success_rate[k]``: their mean; ``min_eps[p]``: the
    smallest grid budget that broke pair ``p`` (``inf`` if none); ``dist_after[k, p]``: the
    distance attacked at ``eps_grid[k]``; the rest as in :class:`PairAttackResult`."""

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


# -- both curves of a metric ----------------------------------------------------------------
def pair_robustness_curves(W, X_train, y_train, X_i, X_j, y_pair, gamma, eps_grid, *, steps: int = 50,
                           box=(0.0, 1.0), device: str = "auto") -> tuple[float, np.ndarray, np.ndarray]:
    """``(gamma_value, attack_success_rate, fraction_not_certified)`` of the metric ``W`` on
    the pairs ``(X_i, X_j)`` with labels ``y_pair`` (or None), one rate per budget of
    ``eps_grid`` in its order: ``gamma`` resolved on the training data (:func:`resolve_gamma`:
    a number, or ``'q0.5'``), :func:`pair_attack_grid`'s success rate (``steps``, ``box``,
    ``device``) and the fraction of pairs whose :func:`certified_pair_radii` is at most the
    budget (an upper bound on the success rate of any attack)."""
    g = resolve_gamma(gamma, W, X_train, y_train)
    eps = np.asarray(eps_grid, dtype=np.float64).ravel()
    grid = pair_attack_grid(W, X_i, X_j, g, eps, steps=steps, box=box, y_pair=y_pair, device=device)
    radii = certified_pair_radii(W, X_i, X_j, g, y_pair=y_pair)
    return g, grid.success_rate[np.searchsorted(grid.eps_grid, eps)], robust_error_curve(radii, eps)
