"""What every attack shares (``ARML_NOTES.md`` sections 2 and 7): the result type, the
attack base class and the pipeline of its final ``__call__``, the registry and the
``attack`` entry point.

The pipeline, the same for every method (foolbox-style: settings in the constructor, data
in the call): validate the inputs, build the :class:`_Problem`, let the method propose
candidate adversarial points (``_run``, the only thing a subclass implements), keep the
smallest candidate that the real classifier ``MahalanobisKNN(M, K)`` flips
(:func:`_verify`) and wrap everything in an :class:`AttackResult`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import numpy as np
import torch

from ..._validation import PointProgress, check_box, check_choice, check_data
from ...device import resolve_device
from ...knn import MahalanobisKNN, check_n_neighbors, pairwise_sq_dists
from ...metric import robust_error_curve

DIST_ELEMENTS = 2**22  # (test x train) distance entries held at once


# =========================================================================== result
@dataclass
class AttackResult:
    """What every attack returns (one type for all methods).

    Attributes
    ----------
    norms : (n_test,) float array
        ``||X_adv - x||_2``; 0 for points already misclassified (clean errors), ``inf``
        where the attack found no verified adversarial point.
    X_adv : (n_test, D) float array
        ``x`` itself for misclassified points, the verified adversarial point for
        successes, NaN rows for failures.
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
        """Empirical robust error: fraction of points with ``norm <= r`` for each ``r``
        (:func:`arml_core.metric.robust_error_curve`)."""
        return robust_error_curve(self.norms, grid)


# =========================================================================== attacks
ATTACKS: dict[str, type[_Attack]] = {}  # method name -> attack class, filled as they are defined


class _Attack:
    """Base of the attack objects: settings in the constructor (a frozen dataclass), data
    in the final :meth:`__call__`; a subclass implements only :meth:`_run`. A subclass
    with a ``name`` joins :data:`ATTACKS`."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides __call__; implement _run instead")
        if cls.__dict__.get("name"):
            ATTACKS[cls.name] = cls

    @final
    def __call__(self, X_train, y_train, X_test, y_test, M, n_neighbors, *, box=None,
                 device="auto", progress: PointProgress | None = None) -> AttackResult:
        """Attack Mahalanobis K-NN on every test point.

        Parameters
        ----------
        X_train, y_train, X_test, y_test : arrays
            The classifier's training set and the points to attack.
        M : (D, D) PSD array or None
            The Mahalanobis matrix (None: Euclidean).
        n_neighbors : int
            K, odd.
        box : None or (lo, hi)
            Scalars or length-D arrays: adversarial points stay in ``[lo, hi]``.  Every
            test point must lie in the box (clip first otherwise).
        device : 'auto', 'cpu' or 'cuda'
            Where distances, the final check and the foolbox model run (float64).  The
            region QPs run on the CPU in float64.
        progress : callable(done, total) or None
            Called as test points are finished.

        Every candidate is checked with ``MahalanobisKNN(M, K)`` before it counts: one whose
        output does not change the prediction is a failure (``norm = inf``), never a
        success, and a point that cannot be attacked never makes the others fail.
        """
        start = time.perf_counter()
        X_train, y_train, X_test, y_test, M = check_data(X_train, y_train, X_test, y_test, M)
        K = check_n_neighbors(n_neighbors, y_train)
        bounds = check_box(box, X_test, inside=True)
        prob = _Problem(X_train, y_train, X_test, y_test, M, K, bounds, device)

        n = len(X_test)
        norms = np.zeros(n)
        X_adv = X_test.copy()
        success = np.ones(n, dtype=bool)
        miscl = np.ones(n, dtype=bool)
        info: dict = {}
        n_rejected = 0
        if n:
            miscl = prob.predict_enc(X_test) != prob.yt_enc
            success = miscl.copy()
            idx = np.flatnonzero(~miscl)
            done = int(miscl.sum())
            if progress is not None and done:
                progress(done, n)
            if len(idx):
                wrapped = None
                if progress is not None:
                    wrapped = lambda d, _t: progress(done + d, n)  # noqa: E731
                cands, info = self._run(prob, idx, wrapped)
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
            norms=norms, X_adv=X_adv, success=success, misclassified=miscl, method=self.name,
            n_neighbors=K, time_s=time.perf_counter() - start, settings=self.settings(),
            n_rejected=int(n_rejected), info=info,
        )

    def settings(self) -> dict:
        return dataclasses.asdict(self)

    def _run(self, prob: _Problem, idx: np.ndarray, progress) -> tuple[list, dict]:
        """Candidate adversarial points for the attacked points ``idx`` (a list per point,
        smallest first) and a dict of counters; ``progress(done, len(idx))``."""
        raise NotImplementedError


def make_attack(method: str | _Attack = "region", **settings) -> _Attack:
    """An attack object from a method name and its settings (or the object itself)."""
    if isinstance(method, _Attack):
        if settings:
            raise ValueError(
                f"settings {sorted(settings)} were given beside an attack object; put them in "
                f"the object ({type(method).__name__}(...)) or pass the method by name"
            )
        return method
    cls = ATTACKS[check_choice("attack method", method, tuple(ATTACKS))]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} for method {method!r}; valid settings: {sorted(known)}"
        )
    return cls(**settings)


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
    progress: PointProgress | None = None,
    **settings: Any,
) -> AttackResult:
    """Attack Mahalanobis K-NN on every test point: ``make_attack(method, **settings)``
    called on the data (see :meth:`_Attack.__call__` for the arguments).

    ``method`` is 'region', 'boundary', 'hopskipjump' or an attack object
    (:class:`RegionAttack`, :class:`BoundaryAttack`, :class:`HopSkipJumpAttack`);
    ``**settings`` are the settings of the named method (the fields of its class).
    """
    return make_attack(method, **settings)(X_train, y_train, X_test, y_test, M, n_neighbors, box=box,
                                           device=device, progress=progress)


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
        step = max(1, DIST_ELEMENTS // max(1, len(self.X_train)))
        for s in range(0, len(X), step):
            out[s : s + step] = pairwise_sq_dists(Zx[s : s + step], self._Z_t, self._sq_t).cpu().numpy()
        return out

    def clip_to_box(self, cands):
        """Candidates clipped to the box (a QP or foolbox keeps them in it only up to rounding)."""
        if self.box is None:
            return cands
        lo, hi = self.box
        return [[np.clip(z, lo, hi) for z in c] for c in cands]


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
