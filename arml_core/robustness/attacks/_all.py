"""Empirical adversarial attacks on Mahalanobis K-NN (``ARML_NOTES.md`` sections 2 and 7).

An attack returns, per test point, a perturbed point that the real classifier
(:class:`~arml_core.knn.MahalanobisKNN`) labels differently, and its distance
``||delta||_2``: an *upper* bound on the minimal adversarial perturbation ``eps*``, to be
read beside the certified *lower* bound of :mod:`arml_core.certify`
(``certified <= eps* <= attack norm`` for every point).

One entry point, settings separated from data (as foolbox does)::

    res = attack(X_train, y_train, X_test, y_test, M, 11, method="region", box=(0, 1))
    res = attack(..., method="boundary", steps=2000)           # settings as keywords
    res = attack(..., method=BoundaryAttack(steps=2000))       # or as an attack object
    res = RegionAttack(n_candidates=8)(X_train, y_train, X_test, y_test, M, 11)

and one result type, :class:`AttackResult`.  Every adversarial point is checked with
``MahalanobisKNN(M, K)`` before it counts; a point whose output does not change the
prediction is reported as a failure (``norm = inf``), never as a success, and one point
that cannot be attacked never makes the others fail.

Methods
-------
``'region'`` (:class:`RegionAttack`, white-box, exact QPs)
    A *region* is a polyhedron of points that the K-NN labels ``c != y``, described by a
    K-set ``S`` of training points and the class-``c`` points ``J`` in it
    (``k = (K + 1) / 2``):

    * *majority* regions (``|J| = k``): every ``j in J`` is strictly closer to ``x + delta``
      than every training point ``q`` with ``y_q != c`` outside ``S``.  A point ranked ahead
      of some ``j`` is then in ``S`` or of class ``c``, so at least ``k`` of the K nearest
      are of class ``c``: a strict majority.  The other members of ``S`` are free.
    * *plurality* regions (``|J| < k``, ``J`` = all class-``c`` members of ``S``, which
      out-vote ``y`` in ``S``; ties go to the smaller class index as in
      :class:`~arml_core.knn.MahalanobisKNN`): the rows above, plus: every member of ``S``
      of neither class ``c`` nor ``y`` is closer than every class-``y`` point outside ``S``.
      Then ``c`` keeps at least ``|J|`` votes and ``y`` at most its votes in ``S``, so the
      prediction is not ``y`` (with several classes a mere plurality can flip the vote).

    Each row ``d_M(x + delta, s) < d_M(x + delta, q)`` is linear in ``delta``
    (``2 (q - s)^T M delta <= d_M(x, q) - d_M(x, s)``), so the smallest ``||delta||`` in a
    region is a least-distance QP, solved exactly by the working-set scheme of
    :mod:`arml_core.exact` (Lawson-Hanson LDP via NNLS on a few rows, check all rows, add the
    most violated, repeat), in float64 on the CPU.  Rows that no ``delta`` shorter than the
    best norm found so far can violate are dropped first (triangle inequality in
    ``Z = X G^T``, then the distance of each half-space); a region whose single-row lower
    bound or growing relaxation value reaches the best norm is abandoned.  Every row is
    tightened by ``margin`` (times the data scale), so ties cannot undo the flip.
    ``solver='cvxpy'`` solves the same QPs with cvxpy / Clarabel (the slow reference).

    Which regions: a best-first search.  Starting regions: for each target class ``c``
    (all, or the ``n_targets`` whose k-th nearest point is closest), the majority region of
    the ``k`` class-``c`` points nearest to ``x``; for each of the ``n_candidates`` training
    points ``t`` nearest to ``x`` that the K-NN labels ``c != y``, the region of the vote at
    ``t`` and the region of the vote just past the point where the segment ``x -> t``
    turns adversarial (both contain a point, so their QPs are feasible).  They are solved
    in increasing lower bound.  A solution ``x' = x + delta`` spawns, up to depth
    ``n_refine``: the region of the vote at ``x'``; the regions across its active facets
    (for an active pair ``(s, q)``: ``q`` replaces the free member of ``S`` farthest from
    ``x'``, ``s`` leaves ``J`` for the nearest class-``c`` point outside it, ``q`` replaces
    ``s`` in the K-set); and the region of the vote at the first still-adversarial probe
    ``x + (1 - g) delta``, ``g`` in ``(0.5, 0.2, 0.05, 0.01)``.  Follow-ups are solved
    before new starting regions and are kept when within ``(1 + explore)`` of the best
    (sideways moves); at most ``max_qp`` QPs per point.  The search is a heuristic: the
    norm is a verified upper bound on ``eps*``, not ``eps*`` itself.

    For K = 1 the exact minimal perturbation of
    :func:`arml_core.exact.minimal_perturbations` is used; its ``delta*`` lies on the
    decision boundary, so it is made strictly adversarial by solving the region QP of the
    other-class point nearest to ``x + delta*`` with the margin (norm within about the
    margin of ``eps*``).

``'boundary'`` (:class:`BoundaryAttack`) and ``'hopskipjump'`` (:class:`HopSkipJumpAttack`)
    Decision-based black-box attacks of foolbox (Brendel et al. 2018; Chen et al. 2019) on a
    ``torch.nn.Module`` wrapping the K-NN (:class:`KNNModule`: training data as buffers,
    logits = vote counts minus ``1e-3 * class index`` so that ``argmax`` is exactly
    ``MahalanobisKNN.predict``).  foolbox needs scalar bounds, and its HopSkipJump clips to
    ``[0, 1]`` whatever the bounds, so the module takes ``u in [0, 1]^D`` and maps it to
    ``x = lower + (upper - lower) u`` (an isotropic map: the l2 geometry is unchanged),
    then clamps ``x`` to a per-feature ``box`` when one is given.  ``(lower, upper)`` is
    the scalar hull of ``box``, else the attack's ``bounds`` setting, else the range of
    the training and test data widened by ``pad`` on each side.  Starting points: the
    other-class training point nearest to ``x`` (under ``M``) that the classifier does not
    label ``y``, moved towards ``x`` by a binary search; a point without one is a failure
    (``inf``) and is left out of the foolbox batch.  Randomness: ``random_state`` seeds
    torch inside ``torch.random.fork_rng``, so the caller's RNG state is unchanged.  Runs
    in float64 on ``device``.

Result conventions (:class:`AttackResult`): ``norms`` is 0 for points the classifier
already misclassifies (clean errors), ``||X_adv - x||`` for successes and ``inf`` for
failures; ``X_adv`` is ``x`` for misclassified points, the verified adversarial point for
successes and a NaN row for failures; ``success`` is True exactly where ``X_adv`` is
classified differently from ``y`` (clean errors included), i.e. where ``norms`` is finite.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ...device import resolve_device
from ..._validation import check_box, check_train_test
from ..exact import ConvergenceError, _ldp, minimal_perturbations
from ...knn import MahalanobisKNN, check_n_neighbors, pairwise_sq_dists
from ...metric import check_metric

__all__ = [
    "AttackResult",
    "RegionAttack",
    "BoundaryAttack",
    "HopSkipJumpAttack",
    "KNNModule",
    "ATTACKS",
    "attack",
    "make_attack",
    "empirical_robust_error",
]

ProgressFn = Callable[[int, int], None]
_ROW_REL = 1e-4  # QP row norms below this (relative) are recomputed without cancellation
_ZERO_ROW = 1e-12  # rows with ||M (q - j)|| below this (relative) are ties for ever: dropped
_N_INIT = 4  # rows in the first working set
_N_ADD = 4  # most violated rows added per working-set iteration
_BOX_TOL = 1e-9  # relative tolerance of the "test points inside the box" check
_DIST_ELEMENTS = 2**22  # (test x train) distance entries held at once
_KEEP_SOLUTIONS = 4  # region solutions kept per point (fallbacks for the final check)
_CROSS_STEPS = 10  # halvings of the segment x -> t when looking for a crossing
_ACTIVE_REL = 1e-7  # a row within this (relative) distance of its boundary is active
_MAX_SWAPS = 16  # neighbouring regions explored per solution
_PROBES = (0.5, 0.2, 0.05, 0.01)  # region attack: x + (1 - g) delta probed after a solution


# =========================================================================== result
@dataclass
class AttackResult:
    """What every attack returns (one type for all methods).

    Attributes
    ----------
    norms : (n_test,) float array
        ``||X_adv - x||_2``; 0 for points already misclassified, ``inf`` where the attack
        found no verified adversarial point.
    X_adv : (n_test, D) float array
        ``x`` itself for misclassified points, the adversarial point for successes, NaN rows
        for failures.
    success : (n_test,) bool array
        ``X_adv`` is classified differently from ``y`` by ``MahalanobisKNN(M, K)``: verified
        flips *and* points already misclassified (norm 0).  Equal to ``isfinite(norms)``.
    misclassified : (n_test,) bool array
        The clean errors (norm 0, not attacked).
    method : str
        ``'region'``, ``'boundary'`` or ``'hopskipjump'``.
    n_neighbors : int
        K.
    time_s : float
        Wall-clock seconds of the whole call (validation and final check included).
    settings : dict
        The attack's settings.
    n_rejected : int
        Points whose candidate adversarial point(s) did not flip the real classifier and
        were therefore reported as failures (or fell back to a larger verified one).
    info : dict
        Method-specific counters (QPs solved, foolbox batches, ...).
    """

    norms: np.ndarray
    X_adv: np.ndarray
    success: np.ndarray
    misclassified: np.ndarray
    method: str
    n_neighbors: int
    time_s: float
    settings: dict = field(default_factory=dict)
    n_rejected: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return int(len(self.norms))

    @property
    def time_per_point(self) -> float:
        """Seconds per test point (all points, misclassified ones included)."""
        return self.time_s / max(1, self.n_points)

    @property
    def success_rate(self) -> float:
        """Fraction of the correctly classified points the attack flipped."""
        att = ~self.misclassified
        return float(self.success[att].mean()) if att.any() else float("nan")

    def robust_error(self, grid) -> np.ndarray:
        """Empirical robust error: fraction of points with ``norm <= r`` for each ``r``."""
        return empirical_robust_error(self.norms, grid)


def empirical_robust_error(norms, grid) -> np.ndarray:
    """Fraction of points whose attack norm is ``<= r`` for each radius ``r`` of ``grid``
    (failed attacks have ``inf`` and never count; at ``r = 0`` it is the clean error)."""
    norms = np.asarray(norms, dtype=float)
    grid = np.atleast_1d(np.asarray(grid, dtype=float))
    if norms.size == 0:
        raise ValueError("no norms: the test set is empty")
    if np.isnan(norms).any():
        raise ValueError("norms contain NaN")
    return (norms[None, :] <= grid[:, None]).mean(axis=1)


# =========================================================================== settings
def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")


def _check_pos(name, value, allow_zero=False):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")


class _Attack:
    """Base of the attack objects: settings in the constructor, data in the call."""

    name: ClassVar[str] = ""

    def __call__(self, X_train, y_train, X_test, y_test, M, n_neighbors, *, box=None,
                 device="auto", progress: ProgressFn | None = None) -> AttackResult:
        return attack(X_train, y_train, X_test, y_test, M, n_neighbors, method=self, box=box,
                      device=device, progress=progress)

    def settings(self) -> dict:
        return dataclasses.asdict(self)

    # implemented by subclasses: (X_adv candidates per attacked point, info)
    def _run(self, prob: "_Problem", idx: np.ndarray, progress) -> tuple[list, dict]:
        raise NotImplementedError


@dataclass(frozen=True)
class RegionAttack(_Attack):
    """White-box region attack on Mahalanobis K-NN (exact convex QPs; see the module docstring).

    Parameters
    ----------
    n_candidates : int
        Training points ``t`` (the nearest to ``x`` that the K-NN labels ``!= y``) whose
        vote regions, at ``t`` and where the segment ``x -> t`` turns adversarial, start the
        search (besides one majority region per target class).  Effort grows linearly.
    n_refine : int
        Depth of the local search from each starting region (re-centring, facet crossings,
        probes towards ``x``).
    n_targets : int or None
        Target classes tried (those whose k-th nearest point is closest); None = all.
    max_qp : int
        At most this many region QPs per test point.
    explore : float
        Follow-up regions within ``(1 + explore)`` times the best norm are expanded further
        (sideways moves); 0 keeps the search strictly descending.
    margin : float
        Every constraint is tightened by ``margin * scale`` (a Euclidean distance; ``scale``
        is the root-mean-square distance of the training points to their mean) so the flip
        is strict.  The norm is at most about that much above the QP optimum.
    solver : 'fast' or 'cvxpy'
        Working-set LDP (exact, fast) or cvxpy/Clarabel on all rows (slow reference).
    tol : float
        Row tolerance of the working-set loop (a distance outside a half-space, relative to
        ``max(1, ||delta||)``).
    max_iter : int
        Working-set iterations per QP; a QP that does not converge is skipped (counted in
        ``info['qp_not_converged']``), never reported as a success.
    """

    name: ClassVar[str] = "region"
    n_candidates: int = 16
    n_refine: int = 4
    n_targets: int | None = None
    max_qp: int = 150
    explore: float = 0.03
    margin: float = 1e-9
    solver: str = "fast"
    tol: float = 1e-9
    max_iter: int = 500

    def __post_init__(self):
        _check_int("n_candidates", self.n_candidates, 0)
        _check_int("n_refine", self.n_refine, 0)
        _check_int("n_targets", self.n_targets, 1, allow_none=True)
        _check_int("max_qp", self.max_qp, 1)
        _check_pos("explore", self.explore, allow_zero=True)
        _check_pos("margin", self.margin, allow_zero=True)
        _check_pos("tol", self.tol)
        _check_int("max_iter", self.max_iter, 1)
        if self.solver not in ("fast", "cvxpy"):
            raise ValueError(f"unknown solver {self.solver!r}; choose 'fast' or 'cvxpy'")

    def _run(self, prob, idx, progress):
        return _region_run(self, prob, idx, progress)


@dataclass(frozen=True)
class _FoolboxAttack(_Attack):
    """Common settings of the foolbox decision-based attacks."""

    bounds: tuple | None = None
    pad: float = 0.1
    batch_size: int = 256
    random_state: int = 0
    n_start: int = 32
    start_search_steps: int = 25

    def _check_common(self):
        if self.bounds is not None:
            try:
                lo, hi = (float(v) for v in self.bounds)
            except (TypeError, ValueError):
                raise ValueError(f"bounds must be None or a pair of numbers (lower, upper), got {self.bounds!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds must be finite with lower < upper, got {self.bounds!r}")
        _check_pos("pad", self.pad, allow_zero=True)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("random_state", self.random_state, 0)
        _check_int("n_start", self.n_start, 1)
        _check_int("start_search_steps", self.start_search_steps, 0)

    def _foolbox_attack(self):
        raise NotImplementedError

    def _run(self, prob, idx, progress):
        return _foolbox_run(self, prob, idx, progress)


@dataclass(frozen=True)
class BoundaryAttack(_FoolboxAttack):
    """foolbox's Boundary Attack (decision-based, l2), run on :class:`KNNModule`.

    Parameters
    ----------
    steps, spherical_step, source_step, source_step_convergance, step_adaptation
        foolbox's ``BoundaryAttack`` settings (``steps`` default lowered from 25000).
    bounds : (lower, upper) or None
        Scalar input bounds when ``box`` is None; default: the data range widened by ``pad``
        times its width on each side.
    batch_size : int
        Points per foolbox call.
    random_state : int
        Seed of the attack's random proposals (torch RNG, forked: no global side effect).
    n_start, start_search_steps
        Other-class training points examined for a starting point, and binary-search steps
        that move it towards ``x``.
    """

    name: ClassVar[str] = "boundary"
    steps: int = 5000
    spherical_step: float = 1e-2
    source_step: float = 1e-2
    source_step_convergance: float = 1e-7
    step_adaptation: float = 1.5

    def __post_init__(self):
        self._check_common()
        _check_int("steps", self.steps, 1)
        for name in ("spherical_step", "source_step", "source_step_convergance"):
            _check_pos(name, getattr(self, name))
        _check_pos("step_adaptation", self.step_adaptation)
        if self.step_adaptation <= 1:
            raise ValueError(f"step_adaptation must be > 1, got {self.step_adaptation!r}")

    def _foolbox_attack(self):
        fb = _foolbox()
        return fb.attacks.BoundaryAttack(
            steps=self.steps, spherical_step=self.spherical_step, source_step=self.source_step,
            source_step_convergance=self.source_step_convergance,
            step_adaptation=self.step_adaptation,
        )


@dataclass(frozen=True)
class HopSkipJumpAttack(_FoolboxAttack):
    """foolbox's HopSkipJump attack (decision-based, l2), run on :class:`KNNModule`.

    ``steps``, ``initial_gradient_eval_steps``, ``max_gradient_eval_steps`` and ``gamma`` are
    foolbox's settings.  Defaults lowered: the gradient evaluations for speed (every
    estimate is that many calls of the K-NN on the whole batch), and ``gamma`` (foolbox:
    1.0) because foolbox stops its boundary binary searches at ``gamma / D^1.5`` of the
    segment, far too coarse in the low dimensions of tabular data.  The other settings are
    as :class:`BoundaryAttack`.
    """

    name: ClassVar[str] = "hopskipjump"
    steps: int = 40
    initial_gradient_eval_steps: int = 50
    max_gradient_eval_steps: int = 500
    gamma: float = 0.01

    def __post_init__(self):
        self._check_common()
        _check_int("steps", self.steps, 1)
        _check_int("initial_gradient_eval_steps", self.initial_gradient_eval_steps, 1)
        _check_int("max_gradient_eval_steps", self.max_gradient_eval_steps, 1)
        _check_pos("gamma", self.gamma)

    def _foolbox_attack(self):
        fb = _foolbox()
        return fb.attacks.HopSkipJumpAttack(
            steps=self.steps, initial_gradient_eval_steps=self.initial_gradient_eval_steps,
            max_gradient_eval_steps=self.max_gradient_eval_steps, gamma=self.gamma,
            constraint="l2",
        )


ATTACKS: dict[str, type[_Attack]] = {
    "region": RegionAttack,
    "boundary": BoundaryAttack,
    "hopskipjump": HopSkipJumpAttack,
}


def make_attack(method: str | _Attack = "region", **settings) -> _Attack:
    """An attack object from a method name and its settings (or the object itself)."""
    if isinstance(method, _Attack):
        if settings:
            raise ValueError(
                f"settings {sorted(settings)} were given beside an attack object; put them in "
                f"the object ({type(method).__name__}(...)) or pass the method by name"
            )
        return method
    if not isinstance(method, str) or method not in ATTACKS:
        raise ValueError(f"unknown attack method {method!r}; choose one of {tuple(ATTACKS)}")
    cls = ATTACKS[method]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} for method {method!r}; valid settings: {sorted(known)}"
        )
    return cls(**settings)


# =========================================================================== validation
def _check_data(X_train, y_train, X_test, y_test, M):
    X_train, y_train, X_test, y_test = check_train_test(X_train, y_train, X_test, y_test)
    D = X_train.shape[1]
    M = np.eye(D) if M is None else check_metric(M, D)
    return X_train, y_train, X_test, y_test, M


def _check_box(box, X_test):
    """As ``_validation.check_box``, and the test points must lie in the box."""
    bounds = check_box(box, X_test)
    if bounds is None:
        return None
    lo, hi = bounds
    if len(X_test):
        scale = _BOX_TOL * max(1.0, float(np.abs(X_test).max()))
        out = np.any((X_test < lo - scale) | (X_test > hi + scale), axis=1)
        if out.any():
            bad = np.flatnonzero(out)
            raise ValueError(
                f"{len(bad)} test point(s) lie outside the box (first indices {bad[:5].tolist()}): "
                "an adversarial point must start from a point of the domain; clip X_test to the "
                "box (np.clip(X_test, lo, hi)) or widen the box"
            )
    return lo, hi


# =========================================================================== problem
class _Problem:
    """Validated data, the fitted classifier and the factors shared by every method."""

    def __init__(self, X_train, y_train, X_test, y_test, M, K, box, device):
        self.X_train, self.y_train, self.X_test, self.y_test, self.M = X_train, y_train, X_test, y_test, M
        self.K = K
        self.k = (K + 1) // 2
        self.box = box
        self.dev = resolve_device(device)
        self.knn = MahalanobisKNN(M, n_neighbors=K, device=self.dev).fit(X_train, y_train)
        self.classes = self.knn.classes_
        self.y_enc = self.knn.y_train_
        pos = {c: i for i, c in enumerate(self.classes.tolist())}
        self.yt_enc = np.array([pos.get(c, -1) for c in y_test.tolist()], dtype=np.int64)
        self.G = self.knn.components_
        # the distances exactly as MahalanobisKNN computes them (Z = X G^T in float64 on dev)
        self._G_t = torch.as_tensor(self.G, dtype=torch.float64, device=self.dev)
        self._Z_t = torch.as_tensor(X_train, dtype=torch.float64, device=self.dev) @ self._G_t.T
        self._sq_t = (self._Z_t * self._Z_t).sum(1)
        cen = X_train - X_train.mean(0)
        self.scale = max(float(np.sqrt((cen * cen).sum(1).mean())), 1e-300)

    def predict_enc(self, X) -> np.ndarray:
        return self.knn.predict_encoded(X)

    def dists(self, X) -> np.ndarray:
        """Squared Mahalanobis distances of rows of ``X`` to every training point (numpy),
        computed as :class:`MahalanobisKNN` computes them."""
        Zx = torch.as_tensor(np.asarray(X, dtype=np.float64), device=self.dev) @ self._G_t.T
        out = np.empty((len(X), len(self.X_train)))
        step = max(1, _DIST_ELEMENTS // max(1, len(self.X_train)))
        for s in range(0, len(X), step):
            out[s : s + step] = pairwise_sq_dists(Zx[s : s + step], self._Z_t, self._sq_t).cpu().numpy()
        return out


# =========================================================================== entry point
def attack(
    X_train,
    y_train,
    X_test,
    y_test,
    M,
    n_neighbors: int,
    *,
    method: str | _Attack = "region",
    box=None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    **settings: Any,
) -> AttackResult:
    """Attack Mahalanobis K-NN on every test point; see the module docstring.

    Parameters
    ----------
    X_train, y_train, X_test, y_test : arrays
        The classifier's training set and the points to attack.
    M : (D, D) PSD array or None
        The Mahalanobis matrix (None: Euclidean).
    n_neighbors : int
        K, odd.
    method : 'region', 'boundary', 'hopskipjump' or an attack object
        (:class:`RegionAttack`, :class:`BoundaryAttack`, :class:`HopSkipJumpAttack`).
    box : None or (lo, hi)
        Scalars or length-D arrays: adversarial points stay in ``[lo, hi]``.  Every test
        point must lie in the box (clip first otherwise).
    device : 'auto', 'cpu' or 'cuda'
        Where distances, the final check and the foolbox model run (float64).  The region
        QPs run on the CPU in float64.
    progress : callable(done, total) or None
        Called as test points are finished.
    **settings
        Settings of the named method (the fields of its attack class).

    Returns
    -------
    AttackResult
    """
    start = time.perf_counter()
    atk = make_attack(method, **settings)
    X_train, y_train, X_test, y_test, M = _check_data(X_train, y_train, X_test, y_test, M)
    K = check_n_neighbors(n_neighbors, y_train)
    if K > len(X_train):
        raise ValueError(f"K={K} is larger than the {len(X_train)} training points")
    bounds = _check_box(box, X_test)
    prob = _Problem(X_train, y_train, X_test, y_test, M, K, bounds, device)

    n, D = X_test.shape
    norms = np.zeros(n)
    X_adv = X_test.copy()
    success = np.ones(n, dtype=bool)
    miscl = np.ones(n, dtype=bool)
    info: dict = {}
    n_rejected = 0
    if n:
        pred = prob.predict_enc(X_test)
        miscl = pred != prob.yt_enc
        success = miscl.copy()
        idx = np.flatnonzero(~miscl)
        done = int(miscl.sum())
        if progress is not None and done:
            progress(done, n)
        if len(idx):
            wrapped = None
            if progress is not None:
                wrapped = lambda d, _t: progress(done + d, n)  # noqa: E731
            cands, info = atk._run(prob, idx, wrapped)
            chosen, n_rejected = _verify(prob, idx, cands)
            for t, i in enumerate(idx):
                z = chosen[t]
                if z is None:
                    norms[i] = np.inf
                    X_adv[i] = np.nan
                else:
                    X_adv[i] = z
                    norms[i] = float(np.linalg.norm(z - X_test[i]))
                    success[i] = True
            if n_rejected:
                info["rejected_points"] = int(n_rejected)
    return AttackResult(
        norms=norms, X_adv=X_adv, success=success, misclassified=miscl, method=atk.name,
        n_neighbors=K, time_s=time.perf_counter() - start, settings=atk.settings(),
        n_rejected=int(n_rejected), info=info,
    )


def _verify(prob: _Problem, idx, cands):
    """Pick, per attacked point, the smallest candidate that the real classifier flips.

    ``cands[t]`` is a list of candidate adversarial points (smallest first).  Returns the
    chosen points (None: none flips) and the number of points where a candidate was rejected.
    """
    chosen = [None] * len(idx)
    pos = np.zeros(len(idx), dtype=int)
    rejected = np.zeros(len(idx), dtype=bool)
    lo_hi = prob.box
    while True:
        live = [t for t in range(len(idx)) if pos[t] < len(cands[t]) and chosen[t] is None]
        if not live:
            break
        Z = np.array([cands[t][pos[t]] for t in live], dtype=np.float64)
        ok = np.all(np.isfinite(Z), axis=1)
        if lo_hi is not None:
            ok &= np.all((Z >= lo_hi[0]) & (Z <= lo_hi[1]), axis=1)
        flip = np.zeros(len(live), dtype=bool)
        if ok.any():
            flip[ok] = prob.predict_enc(Z[ok]) != prob.yt_enc[idx[np.array(live)[ok]]]
        for r, t in enumerate(live):
            if flip[r]:
                chosen[t] = Z[r]
            else:
                rejected[t] = True
                pos[t] += 1
    return chosen, int(rejected.sum())


# =========================================================================== region attack
class _RegionSolver:
    """Per-problem arrays of the region QPs (CPU, float64).

    A candidate region is ``(c, J, S, P)``: target class ``c``, the class-``c`` points ``J``
    that must stay strictly closer to ``x + delta`` than every other-class point outside
    ``S`` (``J`` is part of ``S``), and the points ``P`` of ``S`` (neither of class ``c`` nor
    of the true class ``y``) that must stay closer than every class-``y`` point outside
    ``S`` (only when ``J`` has fewer than ``k`` points; see :meth:`from_centre`).
    """

    def __init__(self, prob: _Problem, atk: RegionAttack):
        self.prob, self.atk = prob, atk
        G = prob.G
        w = (G * G).sum(1)
        self.Z = prob.X_train @ G.T  # d_M(a, b) = ||Z_a - Z_b||^2
        self.sqZ = (self.Z * self.Z).sum(1)
        self.sigma = math.sqrt(float(w.max()))  # ||G||_2: ||G delta|| <= sigma ||delta||
        self._inS = np.zeros(len(prob.X_train), dtype=bool)
        if prob.box is None:
            # eigen-coordinates eta (delta = V eta): rows M (q - j) expressed in the basis V
            self.C = self.Z * np.sqrt(w)[None, :]
            self.V = (G / np.sqrt(np.where(w > 0, w, 1.0))[:, None]).T
        else:
            self.C = prob.X_train @ prob.M
            self.V = None
        self.C = np.ascontiguousarray(self.C)
        self.sqC = (self.C * self.C).sum(1)
        cscale = max(float(np.sqrt(self.sqC.max())), 1e-300)
        self.row_thr = _ROW_REL * cscale
        self.zero_row = _ZERO_ROW * cscale
        self.tau = atk.margin * prob.scale
        y = prob.y_enc
        self.y = y
        self.n_classes = len(prob.classes)
        self.members = [np.flatnonzero(y == c) for c in range(self.n_classes)]
        self.others = [np.flatnonzero(y != c) for c in range(self.n_classes)]
        # K-NN prediction at every training point: the centres of the candidate regions
        # and its K nearest training points (itself included), nearest first
        if prob.K > 1 and atk.n_candidates:
            _, self.nb_train = prob.knn.kneighbors(prob.X_train)
            votes = np.zeros((len(y), self.n_classes), dtype=np.int64)
            np.add.at(votes, (np.repeat(np.arange(len(y)), prob.K), y[self.nb_train].ravel()), 1)
            self.pred_train = votes.argmax(1)
        else:
            self.pred_train = y
        self.last_active = []
        self.stats = dict(qp_solved=0, qp_abandoned=0, qp_infeasible=0, qp_not_converged=0,
                          candidates=0, pruned=0)

    # ---------------------------------------------------------------- candidate regions
    def _nearest(self, pool, dist, m):
        """The ``m`` members of ``pool`` nearest by ``dist``, nearest first."""
        m = min(m, len(pool))
        if m <= 0:
            return pool[:0]
        sel = pool[np.argpartition(dist[pool], m - 1)[:m]] if m < len(pool) else pool
        return sel[np.argsort(dist[sel], kind="stable")]

    def around(self, c, dz):
        """k-majority region for class ``c`` centred on a point with distances ``dz``:
        ``J`` = its ``k`` nearest class-``c`` points, ``S`` = ``J`` and its ``K - k`` nearest
        other-class points."""
        k, K = self.prob.k, self.prob.K
        J = np.sort(self._nearest(self.members[c], dz, k))
        A = self._nearest(self.others[c], dz, K - k)
        return (c, J, np.sort(np.concatenate([J, A])), J[:0])

    def from_centre(self, dz, y):
        """The region of the K-NN vote at a point with distances ``dz`` (None when that vote
        is ``y``).  With a strict majority for its class ``c``: :meth:`around`.  With a mere
        plurality, ``S`` = the K nearest points, ``J`` = those of class ``c`` and ``P`` =
        those of neither ``c`` nor ``y``: then ``c`` keeps at least ``|J|`` votes and ``y`` at
        most its votes in ``S``, so ``c`` still beats ``y``."""
        K, k = self.prob.K, self.prob.k
        S = self._nearest(np.arange(len(dz)), dz, K)
        votes = np.bincount(self.y[S], minlength=self.n_classes)
        c = int(np.argmax(votes))  # ties to the smallest index, as MahalanobisKNN
        if c == y:
            return None
        if votes[c] >= k:
            return self.around(c, dz)
        lab = self.y[S]
        return (c, np.sort(S[lab == c]), np.sort(S), np.sort(S[(lab != c) & (lab != y)]))

    def from_set(self, S, y, dz=None):
        """The region of a given K-set ``S`` (None when its vote is ``y``).  Among a strict
        majority, ``J`` is the ``k`` members nearest to the point with distances ``dz``
        (``dz=None``: ``S`` is already ordered nearest first)."""
        k = self.prob.k
        lab = self.y[S]
        votes = np.bincount(lab, minlength=self.n_classes)
        c = int(np.argmax(votes))
        if c == y:
            return None
        Jc = S[lab == c]
        if votes[c] >= k:
            J = Jc[:k] if dz is None else Jc[np.argsort(dz[Jc], kind="stable")[:k]]
            return (c, np.sort(J), np.sort(S), S[:0])
        return (c, np.sort(Jc), np.sort(S), np.sort(S[(lab != c) & (lab != y)]))

    def make(self, c, J, S, y):
        """A valid candidate from a target class, its points ``J`` and a K-set ``S``
        (``J`` in ``S``), or None.  With ``|J| >= k`` the other members of ``S`` are free;
        otherwise ``J`` becomes all class-``c`` members of ``S``, which must out-vote ``y``
        (ties to the smaller class index), and ``P`` the members of neither class."""
        k = self.prob.k
        S = np.unique(S)
        if len(S) != self.prob.K and len(J) < k:
            return None
        if len(J) >= k:
            return (c, np.sort(J)[:k] if len(J) == k else np.sort(J[:k]), S, S[:0])
        lab = self.y[S]
        n_c, n_y = int((lab == c).sum()), int((lab == y).sum())
        if not (n_c > n_y or (n_c == n_y and c < y)):
            return None
        return (c, S[lab == c], S, S[(lab != c) & (lab != y)])

    def neighbours(self, cand, y, dz):
        """Regions across the facets active at a solution (distances ``dz`` from it): for an
        active pair (s, q) -- q as close as s --, q replaces the free member of ``S`` farthest
        from the solution; s leaves ``J`` for the nearest class-``c`` point outside ``J``; q
        replaces s in the K-set."""
        c, J, S, P = cand
        free = S[~np.isin(S, J) & ~np.isin(S, P)]
        a = int(free[np.argmax(dz[free])]) if len(free) else None
        out = []
        for sp, qp in self.last_active:
            in_S = sp in S and qp not in S
            if a is not None and qp not in S:
                out.append(self.make(c, J, np.append(S[S != a], qp), y))
            if sp in J and len(J) >= self.prob.k:
                pool = self.members[c][~np.isin(self.members[c], J)]
                if len(pool):
                    t = int(pool[np.argmin(dz[pool])])
                    J2 = np.append(J[J != sp], t)
                    if t in S:
                        out.append(self.make(c, J2, S, y))
                    elif a is not None:
                        out.append(self.make(c, J2, np.append(S[S != a], t), y))
            if in_S:
                out.append(self.from_set(np.append(S[S != sp], qp), y, dz))
        return [o for o in out if o is not None]

    def candidates(self, x, y, d):
        """The starting regions of a point ``x`` (label ``y``, distances ``d``):

        * per target class ``c``: :meth:`around` ``x`` (``J`` = the ``k`` class-``c`` points
          nearest to ``x``);
        * for each of the ``n_candidates`` training points ``t`` nearest to ``x`` that the
          classifier labels ``c != y``: the region of the vote at ``t`` and the region of the
          vote just past the point where the segment ``x -> t`` turns adversarial (binary
          search on the vote, ``_CROSS_STEPS`` halvings)."""
        k, atk = self.prob.k, self.atk
        targets = [c for c in range(self.n_classes) if c != y]
        if atk.n_targets is not None and len(targets) > atk.n_targets:
            kth = [np.partition(d[self.members[c]], k - 1)[k - 1] for c in targets]
            targets = [targets[j] for j in np.argsort(kth, kind="stable")[: atk.n_targets]]
        out = [self.around(c, d) for c in targets]
        if not atk.n_candidates or self.prob.K == 1:
            return out
        pool = np.flatnonzero(np.isin(self.pred_train, targets))
        ts = self._nearest(pool, d, atk.n_candidates)
        if len(ts) == 0:
            return out
        out += [self.from_set(self.nb_train[t], y) for t in ts]
        # vectorised binary search along x -> t on the K-NN vote (numpy, heuristic only)
        zx = x @ self.prob.G.T
        U = self.Z[ts] - zx  # directions in Z-space
        lo = np.zeros(len(ts))
        hi = np.ones(len(ts))
        for _ in range(_CROSS_STEPS):
            mid = 0.5 * (lo + hi)
            adv = self._votes(zx + mid[:, None] * U) != y
            hi = np.where(adv, mid, hi)
            lo = np.where(adv, lo, mid)
        for r in range(len(ts)):
            zc = zx + hi[r] * U[r]
            diff = self.Z - zc
            out.append(self.from_centre(np.einsum("ij,ij->i", diff, diff), y))
        return [o for o in out if o is not None]

    def _votes(self, Zq):
        """K-NN predictions at points given in Z-space (numpy; ties as MahalanobisKNN)."""
        K = self.prob.K
        dq = self.sqZ[None, :] - 2.0 * (Zq @ self.Z.T)
        nb = np.argpartition(dq, K - 1, axis=1)[:, :K]
        votes = np.zeros((len(Zq), self.n_classes), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(len(Zq)), K), self.y[nb].ravel()), 1)
        return votes.argmax(1)

    # ---------------------------------------------------------------- rows of one QP
    def _blocks(self, cand, y, d, radius=math.inf):
        """``(rows' s points, q points)`` of a candidate; with a finite ``radius`` the pairs
        that no ``||delta|| < radius`` can make violated are left out, by the triangle
        inequality in ``Z``-space: ``sqrt(d_q) - sigma r > sqrt(d_s) + sigma r`` keeps ``q``
        farther than ``s`` (``sigma = ||G||_2``)."""
        c, J, S, P = cand
        self._inS[S] = True
        Q = self.others[c]
        keep = ~self._inS[Q]
        reach = 2.0 * self.sigma * (radius + self.tau)
        if math.isfinite(reach) and len(J):
            keep &= np.sqrt(d[Q]) < math.sqrt(float(d[J].max())) + reach
        blocks = [(J, Q[keep])]
        if len(P):
            Qy = self.members[y]
            keep = ~self._inS[Qy]
            if math.isfinite(reach):
                keep &= np.sqrt(d[Qy]) < math.sqrt(float(d[P].max())) + reach
            blocks.append((P, Qy[keep]))
        self._inS[S] = False
        return blocks

    def rows(self, cand, y, d, best):
        """Flattened rows ``(s, q, 1 / ||M (q - s)||, normalised rhs - tau)`` that a solution
        better than ``best`` could violate (the others lie farther than ``best`` from the
        origin), and the single-row lower bound over those rows (a valid bound on the QP:
        when it is ``>= best`` the candidate is discarded, whatever the rows left out).
        Rows with ``M (q - s) = 0`` are ties for ever and are dropped (the final check
        catches their effect)."""
        out_s, out_q, out_inv, out_h = [], [], [], []
        lb = 0.0
        for Sx, Q in self._blocks(cand, y, d, best):
            if len(Q) == 0 or len(Sx) == 0:
                continue
            CS = self.C[Sx]
            CQ = self.C[Q]
            n2 = self.sqC[Sx][:, None] + self.sqC[Q][None, :] - 2.0 * (CS @ CQ.T)
            nr = np.sqrt(np.maximum(n2, 0.0))
            small = nr < self.row_thr
            if small.any():  # recompute without cancellation
                a, b = np.nonzero(small)
                nr[a, b] = np.linalg.norm(CQ[b] - CS[a], axis=1)
            valid = nr > self.zero_row
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.where(valid, 1.0 / nr, 0.0)
                hn = np.where(valid, 0.5 * (d[Q][None, :] - d[Sx][:, None]) * inv - self.tau, np.inf)
            lb = max(lb, float(-hn.min()))
            a, b = np.nonzero(hn < best)
            out_s.append(Sx[a])
            out_q.append(Q[b])
            out_inv.append(inv[a, b])
            out_h.append(hn[a, b])
        if not out_s:
            e = np.zeros(0)
            return e.astype(np.int64), e.astype(np.int64), e, e, lb
        return (np.concatenate(out_s), np.concatenate(out_q), np.concatenate(out_inv),
                np.concatenate(out_h), lb)

    def quick_lb(self, cand, y, d):
        """Single-row lower bound from the rows violated at ``delta = 0`` only (cheap)."""
        lb = 0.0
        for Sx, Q in self._blocks(cand, y, d):
            if len(Sx) == 0:
                continue
            Q = Q[d[Q] < d[Sx].max()]
            if len(Q) == 0:
                continue
            n2 = self.sqC[Sx][:, None] + self.sqC[Q][None, :] - 2.0 * (self.C[Sx] @ self.C[Q].T)
            nr = np.sqrt(np.maximum(n2, 0.0))
            gap = d[Sx][:, None] - d[Q][None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where((nr > self.row_thr) & (gap > 0), 0.5 * gap / nr, 0.0)
            lb = max(lb, float(v.max()))
        return lb

    # ---------------------------------------------------------------- one QP
    def solve(self, x, cand, y, d, best):
        """Smallest ``||delta||`` in a candidate region: (value, delta) or (inf, None).

        Abandons (returns inf) as soon as the value is known to be ``>= best``."""
        rs, rq, inv, hn, lb = self.rows(cand, y, d, best)
        self.stats["candidates"] += 1
        if lb >= best:
            self.stats["pruned"] += 1
            return math.inf, None
        if self.atk.solver == "cvxpy":
            return self._solve_cvxpy(x, rs, rq, inv, hn, best)
        box = self.prob.box
        nr = len(rs)
        dim = self.C.shape[1]
        if box is not None:
            up, dn = box[1] - x, x - box[0]
            bidx = np.concatenate([np.flatnonzero(np.isfinite(up)), np.flatnonzero(np.isfinite(dn)) + dim])
            bh = np.concatenate([up, dn])[bidx]
            bsign = np.where(bidx < dim, 1.0, -1.0)
            bcol = bidx % dim
        else:
            bidx = np.zeros(0, dtype=np.int64)
        inW = np.zeros(nr + len(bidx), dtype=bool)
        A_rows, h_rows = [], []

        def add(ix):
            for r in ix:
                r = int(r)
                inW[r] = True
                if r < nr:
                    A_rows.append((self.C[rq[r]] - self.C[rs[r]]) * inv[r])
                    h_rows.append(hn[r])
                else:
                    e = np.zeros(dim)
                    e[bcol[r - nr]] = bsign[r - nr]
                    A_rows.append(e)
                    h_rows.append(bh[r - nr])

        n0 = min(_N_INIT, nr)
        add(np.argpartition(hn, n0 - 1)[:n0] if 0 < n0 < nr else np.arange(nr))
        if not A_rows:  # nothing can be violated: cannot happen for a correctly classified x
            return 0.0, np.zeros(len(x))
        for _ in range(self.atk.max_iter):
            try:
                eta = _ldp(np.asarray(A_rows), np.asarray(h_rows))
            except ConvergenceError:
                self.stats["qp_not_converged"] += 1
                return math.inf, None
            if eta is None:
                self.stats["qp_infeasible"] += 1
                return math.inf, None
            val = float(np.linalg.norm(eta))
            if val >= best:  # the relaxation already loses; the exact value is larger still
                self.stats["qp_abandoned"] += 1
                return math.inf, None
            s = self.C @ eta
            v_rows = (s[rq] - s[rs]) * inv - hn  # distance outside each half-space
            v = np.concatenate([v_rows, bsign * eta[bcol] - bh]) if len(bidx) else v_rows.copy()
            v[inW] = -np.inf
            viol = np.flatnonzero(v > self.atk.tol * max(1.0, val))
            if len(viol) == 0:
                self.stats["qp_solved"] += 1
                self._set_active(rs, rq, v_rows, val)
                return val, (self.V @ eta if self.V is not None else eta)
            if len(viol) > _N_ADD:
                viol = viol[np.argpartition(-v[viol], _N_ADD - 1)[:_N_ADD]]
            add(viol)
        self.stats["qp_not_converged"] += 1
        return math.inf, None

    def _solve_cvxpy(self, x, rs, rq, inv, hn, best):
        import cvxpy as cp

        from ..exact import _clarabel_solve

        box = self.prob.box
        dim = self.C.shape[1]
        eta = cp.Variable(dim)
        cons = [((self.C[rq] - self.C[rs]) * inv[:, None]) @ eta <= hn] if len(rs) else []
        if box is not None:
            far = 1e6 * (1.0 + float(np.abs(self.prob.X_train).max()))
            cons += [eta <= np.minimum(box[1] - x, far), eta >= np.maximum(box[0] - x, -far)]
        problem = cp.Problem(cp.Minimize(cp.sum_squares(eta)), cons)
        status, _ = _clarabel_solve(problem, cp)
        if status not in ("optimal", "optimal_inaccurate"):
            self.stats["qp_infeasible" if "infeasible" in str(status) else "qp_not_converged"] += 1
            return math.inf, None
        e = np.asarray(eta.value, dtype=np.float64)
        val = float(np.linalg.norm(e))
        if val >= best:
            self.stats["qp_abandoned"] += 1
            return math.inf, None
        self.stats["qp_solved"] += 1
        if len(rs):
            sc = self.C @ e
            self._set_active(rs, rq, (sc[rq] - sc[rs]) * inv - hn, val)
        return val, (self.V @ e if self.V is not None else e)

    def _set_active(self, rs, rq, v_rows, val):
        """Remember the (s, q) pairs of the rows active at the last solution, most active
        first (the facets across which the neighbouring regions lie)."""
        act = np.flatnonzero(v_rows >= -_ACTIVE_REL * max(1.0, val))
        act = act[np.argsort(-v_rows[act], kind="stable")][:_MAX_SWAPS]
        self.last_active = list(zip(rs[act].tolist(), rq[act].tolist()))

    # ---------------------------------------------------------------- one point
    def point(self, x, y, d):
        """Adversarial candidates for one correctly classified point, smallest first.

        Best-first search: the starting regions (:meth:`candidates`) in increasing cheap
        lower bound; every solution ``x' = x + delta`` within ``(1 + explore)`` of the best
        spawns, up to depth ``n_refine``, the region of the vote at ``x'``, the regions
        across its active facets (:meth:`neighbours`) and the region of the vote at the first
        still-adversarial probe ``x + (1 - g) delta`` (``g`` in ``_PROBES``; that region holds
        a point closer to ``x``).  Follow-ups go before the remaining starting regions; at
        most ``max_qp`` QPs."""
        atk = self.atk
        zx = x @ self.prob.G.T
        heap, seen, sols = [], set(), []
        best = math.inf
        counter = 0

        def push(cand, depth, parent_val=None):
            # follow-ups (group 0) before the starting regions (group 1, by lower bound)
            nonlocal counter
            if cand is None:
                return
            key = (cand[0],) + tuple(tuple(a.tolist()) for a in cand[1:])
            if key in seen:
                return
            seen.add(key)
            if parent_val is None:
                entry = (1, self.quick_lb(cand, y, d), counter, depth, cand)
            else:
                entry = (0, parent_val, counter, depth, cand)
            heapq.heappush(heap, entry)
            counter += 1

        for cand in self.candidates(x, y, d):
            push(cand, 0)
        n_qp = 0
        while heap and n_qp < atk.max_qp:
            group, lb, _, depth, cand = heapq.heappop(heap)
            if group == 1 and lb >= best:
                break  # every region left has a lower bound >= best
            n_qp += 1
            # follow-ups are solved up to (1 + explore) * best: a slightly worse region can
            # lead on to a better one (sideways moves of the local search)
            limit = best * (1.0 + atk.explore) if group == 0 else best
            val, delta = self.solve(x, cand, y, d, limit)
            if delta is None:
                continue
            if val < best:
                best = val
                sols.append((val, delta))
            if depth >= atk.n_refine:
                continue
            dz = self._dz(zx, delta)
            push(self.from_centre(dz, y), depth + 1, val)
            for nb in self.neighbours(cand, y, dz):
                push(nb, depth + 1, val)
            for g in _PROBES:
                probe = self.from_centre(self._dz(zx, (1.0 - g) * delta), y)
                if probe is not None:
                    push(probe, depth + 1, val)
                    break
        sols.sort(key=lambda s: s[0])
        return [x + dl for _, dl in sols[:_KEEP_SOLUTIONS]]

    def _dz(self, zx, delta):
        """Squared distances from ``x + delta`` to every training point (numpy)."""
        diff = self.Z - (zx + delta @ self.prob.G.T)
        return np.einsum("ij,ij->i", diff, diff)

    def polish(self, x, y, delta):
        """K = 1: make the exact (boundary) solution strictly adversarial with the margin:
        the region of the other-class point nearest to ``x + delta``."""
        dz = self.prob.dists((x + delta)[None, :])[0]
        other = np.flatnonzero(self.y != y)
        n = other[np.argmin(dz[other])]
        cand = (int(self.y[n]), np.array([n]), np.array([n]), np.zeros(0, np.int64))
        _, dl = self.solve(x, cand, y, self.prob.dists(x[None, :])[0], math.inf)
        return dl


def _region_run(atk: RegionAttack, prob: _Problem, idx, progress, *, exhaustive_k1=False):
    solver = _RegionSolver(prob, atk)
    cands = [[] for _ in idx]
    info: dict = {}
    with threadpool_limits(limits=1, user_api="blas"):
        if prob.K == 1 and not exhaustive_k1:
            Xi = prob.X_test[idx]
            norms, deltas = minimal_perturbations(
                prob.X_train, prob.y_train, Xi, prob.y_test[idx], prob.M, box=prob.box,
                solver=atk.solver, device=prob.dev, strict=False,
            )
            for t, i in enumerate(idx):
                x, y = prob.X_test[i], int(prob.yt_enc[i])
                if np.isfinite(norms[t]):
                    dl = solver.polish(x, y, deltas[t])
                    if dl is not None:
                        cands[t].append(x + dl)
                    cands[t].append(x + deltas[t] * (1 + 1e-6))  # fallback, checked like all
                elif np.isnan(norms[t]):  # the exact solve did not converge: generic search
                    cands[t] = solver.point(x, y, prob.dists(x[None, :])[0])
                if progress is not None:
                    progress(t + 1, len(idx))
        else:
            step = max(1, _DIST_ELEMENTS // max(1, len(prob.X_train)))
            for s in range(0, len(idx), step):
                blk = idx[s : s + step]
                Dm = prob.dists(prob.X_test[blk])
                for r, i in enumerate(blk):
                    x, y = prob.X_test[i], int(prob.yt_enc[i])
                    if exhaustive_k1:
                        cands[s + r] = _exhaustive_k1(solver, x, y, Dm[r])
                    else:
                        cands[s + r] = solver.point(x, y, Dm[r])
                    if progress is not None:
                        progress(s + r + 1, len(idx))
    info.update(solver.stats)
    if prob.box is not None:  # the QP keeps x + delta in the box up to rounding: clip it
        lo, hi = prob.box
        cands = [[np.clip(z, lo, hi) for z in c] for c in cands]
    return cands, info


def _exhaustive_k1(solver: _RegionSolver, x, y, d):
    """K = 1 through the generic region QP: ``J = S = {n}`` for every other-class point
    ``n``, visited in increasing single-row bound (exact up to the margin; for tests)."""
    negs = np.flatnonzero(solver.y != y)
    cands = [(int(solver.y[n]), np.array([n]), np.array([n]), np.zeros(0, np.int64)) for n in negs]
    lbs = [solver.quick_lb(c, y, d) for c in cands]
    best, sol = math.inf, None
    for r in np.argsort(lbs, kind="stable"):
        if lbs[r] >= best:
            break
        val, dl = solver.solve(x, cands[r], y, d, best)
        if dl is not None and val < best:
            best, sol = val, dl
    return [] if sol is None else [x + sol]


# =========================================================================== foolbox attacks
class KNNModule(torch.nn.Module):
    """Mahalanobis K-NN as a torch module for decision-based attacks.

    ``forward(u)`` maps ``u`` to input space, ``x = offset + scale * u`` (clamped to
    ``[lo, hi]`` when a per-feature box is given), and returns logits ``(n, C)``: the vote
    counts of the K nearest training points minus ``1e-3 * class index``, so that ``argmax``
    equals :meth:`MahalanobisKNN.predict_encoded` (ties to the smallest class index).
    Training data, factor and labels are registered buffers (they follow ``.to(device)``).
    Runs in float64.
    """

    def __init__(self, knn: MahalanobisKNN, *, offset: float = 0.0, scale: float = 1.0, lo=None, hi=None):
        super().__init__()
        G = torch.as_tensor(knn.components_, dtype=torch.float64)
        Z = torch.as_tensor(knn.X_train_, dtype=torch.float64) @ G.T
        self.register_buffer("G", G)
        self.register_buffer("Z", Z)
        self.register_buffer("sq", (Z * Z).sum(1))
        self.register_buffer("y", torch.as_tensor(knn.y_train_, dtype=torch.int64))
        C = len(knn.classes_)
        self.register_buffer("tie", -1e-3 * torch.arange(C, dtype=torch.float64))
        D = G.shape[1]
        lo_t = torch.full((D,), -math.inf, dtype=torch.float64) if lo is None else torch.as_tensor(lo, dtype=torch.float64)
        hi_t = torch.full((D,), math.inf, dtype=torch.float64) if hi is None else torch.as_tensor(hi, dtype=torch.float64)
        self.register_buffer("lo", lo_t)
        self.register_buffer("hi", hi_t)
        self.offset = float(offset)
        self.scale = float(scale)
        self.n_neighbors = int(knn.n_neighbors_)
        self.n_classes = C

    def to_input(self, u: torch.Tensor) -> torch.Tensor:
        x = self.offset + self.scale * u.to(torch.float64)
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = self.to_input(u)
        d = pairwise_sq_dists(x @ self.G.T, self.Z, self.sq)
        idx = torch.topk(d, self.n_neighbors, dim=1, largest=False, sorted=True).indices
        counts = torch.zeros(len(x), self.n_classes, dtype=torch.float64, device=x.device)
        counts.scatter_add_(1, self.y[idx], torch.ones(idx.shape, dtype=torch.float64, device=x.device))
        return counts + self.tie


def _foolbox():
    """foolbox, imported on first use (its import warns about a deprecated scipy path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    return foolbox


def _foolbox_bounds(atk: _FoolboxAttack, prob: _Problem):
    if prob.box is not None:
        lo, hi = prob.box
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("the foolbox attacks need a finite box (or box=None and bounds=...)")
        lower, upper = float(lo.min()), float(hi.max())
        per_feature = not (np.all(lo == lower) and np.all(hi == upper))
        return lower, upper, (lo, hi) if per_feature else (None, None)
    if atk.bounds is not None:
        lower, upper = (float(v) for v in atk.bounds)
        allX = np.concatenate([prob.X_train, prob.X_test])
        if allX.min() < lower or allX.max() > upper:
            raise ValueError(
                f"bounds={atk.bounds!r} do not contain the data (range [{allX.min():.4g}, "
                f"{allX.max():.4g}])"
            )
        return lower, upper, (None, None)
    allX = np.concatenate([prob.X_train, prob.X_test])
    lower, upper = float(allX.min()), float(allX.max())
    width = max(upper - lower, 1e-12)
    return lower - atk.pad * width, upper + atk.pad * width, (None, None)


def _starting_points(prob: _Problem, module: KNNModule, idx, U, atk: _FoolboxAttack):
    """Adversarial starting points in u-space (NaN rows where none was found).

    For each point, the ``n_start`` training points nearest to it (under ``M``) that the
    classifier does not label ``y`` are tried in order, as the module sees them (mapped to
    the bounds, clamped to the box); the first adversarial one is moved towards ``x`` by
    ``start_search_steps`` halvings of the segment, staying adversarial."""
    dev = prob.dev
    pred_train = prob.predict_enc(prob.X_train)
    U_train = np.clip((prob.X_train - module.offset) / module.scale, 0.0, 1.0)
    starts = np.full(U.shape, np.nan)
    Dm = prob.dists(prob.X_test[idx])
    lists = []
    for t, i in enumerate(idx):
        ok = np.flatnonzero(pred_train != prob.yt_enc[i])
        lists.append(ok[np.argsort(Dm[t][ok], kind="stable")[: atk.n_start]])
    with torch.no_grad():
        for rank in range(atk.n_start):
            rows = [t for t in range(len(idx)) if np.isnan(starts[t, 0]) and rank < len(lists[t])]
            if not rows:
                break
            cand = np.array([U_train[lists[t][rank]] for t in rows])
            lab = torch.as_tensor(prob.yt_enc[idx[rows]], device=dev)
            adv = (module(torch.as_tensor(cand, device=dev)).argmax(1) != lab).cpu().numpy()
            starts[np.array(rows)[adv]] = cand[adv]
        has = np.flatnonzero(np.isfinite(starts[:, 0]))
        if len(has) and atk.start_search_steps:
            X0 = torch.as_tensor(U[has], device=dev)
            S = torch.as_tensor(starts[has], device=dev)
            lab = torch.as_tensor(prob.yt_enc[idx[has]], device=dev)
            lo = torch.zeros(len(has), dtype=torch.float64, device=dev)
            hi = torch.ones(len(has), dtype=torch.float64, device=dev)
            for _ in range(atk.start_search_steps):  # blend x -> start, keep the adversarial side
                mid = 0.5 * (lo + hi)
                a = module((1 - mid)[:, None] * X0 + mid[:, None] * S).argmax(1) != lab
                hi = torch.where(a, mid, hi)
                lo = torch.where(a, lo, mid)
            starts[has] = ((1 - hi)[:, None] * X0 + hi[:, None] * S).cpu().numpy()
    return starts


def _foolbox_run(atk: _FoolboxAttack, prob: _Problem, idx, progress):
    fb = _foolbox()
    dev = prob.dev
    lower, upper, (blo, bhi) = _foolbox_bounds(atk, prob)
    module = KNNModule(prob.knn, offset=lower, scale=upper - lower, lo=blo, hi=bhi).to(dev).eval()
    fmodel = fb.PyTorchModel(module, bounds=(0.0, 1.0), device=dev)
    U = np.clip((prob.X_test[idx] - lower) / (upper - lower), 0.0, 1.0)
    starts = _starting_points(prob, module, idx, U, atk)
    has = np.flatnonzero(np.isfinite(starts[:, 0]))
    cands = [[] for _ in idx]
    info = dict(no_starting_point=int(len(idx) - len(has)), batches=0, batch_errors=0)
    fb_attack = atk._foolbox_attack()
    done = len(idx) - len(has)
    if progress is not None and done:
        progress(done, len(idx))
    devices = []  # CUDA device indices whose RNG is forked too
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(atk.random_state)
        for s in range(0, len(has), atk.batch_size):
            sel = has[s : s + atk.batch_size]
            out = _foolbox_batch(fb_attack, fmodel, module, U[sel], starts[sel], prob.yt_enc[idx[sel]], dev, info)
            for r, t in enumerate(sel):
                if out[r] is not None:
                    x = prob.X_test[idx[t]]
                    z = out[r]
                    # the model's own output first; nudged outwards along the ray as a fallback
                    cands[t] = [z] + [x + (1 + e) * (z - x) for e in (1e-9, 1e-7, 1e-5)]
            done += len(sel)
            info["batches"] += 1
            if progress is not None:
                progress(done, len(idx))
    if prob.box is not None:
        lo, hi = prob.box
        cands = [[np.clip(z, lo, hi) for z in c] for c in cands]
    return cands, info


def _foolbox_batch(fb_attack, fmodel, module, U, S, labels, dev, info):
    """Run foolbox on one batch; a batch that errors is retried point by point, so one bad
    point never costs the others.  Returns input-space points (None where it failed)."""
    fb = _foolbox()
    Ut = torch.as_tensor(U, device=dev)
    St = torch.as_tensor(S, device=dev)
    lab = torch.as_tensor(labels, device=dev)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            raw, _, _ = fb_attack(fmodel, Ut, fb.criteria.Misclassification(lab), epsilons=None, starting_points=St)
    except (ValueError, AssertionError, RuntimeError) as exc:
        info["batch_errors"] += 1
        errors = info.setdefault("errors", [])
        if len(errors) < 10:
            errors.append(f"{type(exc).__name__}: {exc}")
        if len(U) == 1:
            return [None]
        return [r for t in range(len(U)) for r in
                _foolbox_batch(fb_attack, fmodel, module, U[t : t + 1], S[t : t + 1], labels[t : t + 1], dev, info)]
    with torch.no_grad():
        X = module.to_input(raw).cpu().numpy()
    return [X[r] if np.all(np.isfinite(X[r])) else None for r in range(len(U))]
