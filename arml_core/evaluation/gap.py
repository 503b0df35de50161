"""Certified <= exact <= attack: the three radii of K-NN robustness side by side, for K > 1
where the exact search (:func:`~arml_core.robustness.exact_knn.minimal_perturbations_knn`)
is feasible, so the gap between the lower bound (ARML Theorem 1) and the upper bound (an
attack) can be seen and measured.

The exact search proves ``eps*`` per point or, at its work limit, an interval
``[lower, upper]``; nothing here replaces an unproven radius by a guess: robust error
curves from it are *intervals* (:func:`robust_error_interval`) that collapse to one curve
where every point is proven.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from ..data.prepare import Dataset
from ..knn import check_n_neighbors
from ..metric import robust_error_curve

__all__ = ["EXACT_KNN_APP_MAX_TRAIN", "ExactKNNPlan", "exact_knn_plan", "exact_knn_radii", "exact_knn_one", "robust_error_interval",
           "gap_summary", "gap_table"]

#: the app offers exact K > 1 radii up to this many training points (the search holds N x N
#: arrays and its cells grow with N; benchmarks/bench_exact_knn.py measures 50-350 ms per
#: point at N = 100 with 3000 QPs)
EXACT_KNN_APP_MAX_TRAIN = 1000
#: default on when the test set is at most this large (with the per-point time limit below)
EXACT_KNN_APP_MAX_TEST = 300


@dataclass(frozen=True)
class ExactKNNPlan:
    """How the app runs the exact K > 1 search on a data set: whether it is offered at all,
    whether it runs by default, the work limit per point and the worst-case seconds."""

    offered: bool
    default_on: bool
    max_qp: int
    max_seconds_per_point: float
    worst_case_s: float
    reason: str


def exact_knn_plan(n_train: int, n_test: int, K: int, *, budget_s: float = 30.0, max_qp: int = 3000) -> ExactKNNPlan:
    """The work limits for exact K > 1 radii of ``n_test`` points against ``n_train``: a time
    limit per point so that the whole set takes at most about ``budget_s`` (at least 0.1 s
    per point), ``max_qp`` QPs per point. Offered for ``K > 1`` and ``n_train <=``
    :data:`EXACT_KNN_APP_MAX_TRAIN`; on by default for ``n_test <=`` :data:`EXACT_KNN_APP_MAX_TEST`."""
    if K <= 1:
        return ExactKNNPlan(False, False, max_qp, 0.0, 0.0, "K = 1: the radii are exact already")
    if n_train > EXACT_KNN_APP_MAX_TRAIN:
        return ExactKNNPlan(False, False, max_qp, 0.0, 0.0,
                            f"{n_train} training points: the exact K-NN search is offered up to "
                            f"{EXACT_KNN_APP_MAX_TRAIN} (use a smaller training subsample)")
    per_point = max(0.1, budget_s / max(1, n_test))
    worst = per_point * n_test
    return ExactKNNPlan(True, n_test <= EXACT_KNN_APP_MAX_TEST, max_qp, per_point, worst,
                        f"at most {max_qp} QPs and {per_point:.2g} s per point, {worst:.0f} s in the worst case")


def exact_knn_radii(dataset: Dataset, M, n_neighbors: int, *, plan: ExactKNNPlan | None = None,
                    device: str = "auto", progress: Callable[[int, int], None] | None = None):
    """The exact K-NN search (K > 1) on the test split of ``dataset`` under the work limits of
    ``plan`` (default :func:`exact_knn_plan`): an
    :class:`~arml_core.robustness.exact_knn.ExactKNNResult` (``lower``/``upper``/``proven``,
    ``certified``). The work-limit warning is folded into the result (``proven``), not raised."""
    from ..robustness import minimal_perturbations

    K = check_n_neighbors(n_neighbors, dataset.y_train)
    if K == 1:
        raise ValueError("exact_knn_radii is for K > 1; for K = 1 the radii of radii_for are exact")
    plan = plan or exact_knn_plan(len(dataset.y_train), len(dataset.y_test), K)
    if not plan.offered:
        raise ValueError(f"exact K-NN radii are not offered here: {plan.reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return minimal_perturbations(dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test, M,
                                     n_neighbors=K, max_qp=plan.max_qp, max_seconds=plan.max_seconds_per_point,
                                     strict=False, device=device, progress=progress)


def exact_knn_one(X_train, y_train, x, y, M, n_neighbors: int, *, max_qp: int = 20000,
                  max_seconds: float = 10.0, box=None, device: str = "auto"):
    """The exact K-NN search (K > 1) for one point ``x`` with label ``y`` (a larger work limit
    than for a whole test set): its :class:`~arml_core.robustness.exact_knn.ExactKNNResult`."""
    from ..robustness import minimal_perturbations

    x = np.asarray(x, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return minimal_perturbations(X_train, y_train, x[None, :], np.asarray([y]), M, n_neighbors=int(n_neighbors),
                                     max_qp=max_qp, max_seconds=max_seconds, strict=False, box=box, device=device)


def robust_error_interval(lower, upper, grid) -> tuple[np.ndarray, np.ndarray]:
    """Robust error at each radius of ``grid`` from per-point intervals ``lower <= eps* <= upper``:
    ``(low, high)`` with ``low`` the fraction of points surely non-robust (``upper <= r``) and
    ``high`` the fraction possibly non-robust (``lower <= r``). Equal where every point is proven."""
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    if lower.shape != upper.shape or np.any(np.isnan(lower)) or np.any(np.isnan(upper)):
        raise ValueError("lower and upper must be NaN-free arrays of the same shape")
    if np.any(lower > upper * (1 + 1e-9) + 1e-300):
        raise ValueError("an interval has lower > upper")
    return robust_error_curve(upper, grid), robust_error_curve(lower, grid)


def _close(a, b, rtol: float) -> np.ndarray:
    return np.isclose(a, b, rtol=rtol, atol=0.0) | ((a == b) & np.isfinite(a))


def gap_summary(certified, result, attack=None, *, rtol: float = 1e-6) -> dict:
    """Per-data-set figures of the gap, over the correctly classified points whose exact radius
    was proven: mean certified / exact / attack radius, the fractions where Theorem 1 and the
    attack equal the exact radius (relative ``rtol``), and the fraction proven."""
    certified = np.asarray(certified, dtype=float)
    correct = np.asarray(result.upper) > 0
    proven = np.asarray(result.proven) & correct
    out = {"correct": int(correct.sum()), "proven": int(proven.sum()),
           "proven_fraction": float(proven.sum() / correct.sum()) if correct.any() else math.nan}
    exact = np.asarray(result.upper)[proven]
    out["mean_certified"] = float(certified[proven].mean()) if proven.any() else math.nan
    out["mean_exact"] = float(exact.mean()) if proven.any() else math.nan
    out["certified_is_exact"] = float(_close(certified[proven], exact, rtol).mean()) if proven.any() else math.nan
    if attack is not None:
        attack = np.asarray(attack, dtype=float)
        ok = proven & np.isfinite(attack)
        out["mean_attack"] = float(attack[ok].mean()) if ok.any() else math.nan
        out["attack_is_exact"] = float(_close(attack[ok], np.asarray(result.upper)[ok], rtol).mean()) \
            if ok.any() else math.nan
    return out


def gap_table(certified_by_method: dict, exact_by_method: dict, attack_by_method: dict, grid, *,
              label: Callable[[str], str] = str) -> pd.DataFrame:
    """Robust error (%) per method and radius, one row per (method, bound): certified, exact
    (``"a"`` or ``"a-b"`` where unproven points leave an interval) and attack."""
    grid = np.atleast_1d(np.asarray(grid, dtype=float))
    cols = [f"{g:g}" for g in grid]
    rows, index = [], []
    for m, cert in certified_by_method.items():
        rows.append([f"{100 * v:.1f}" for v in robust_error_curve(cert, grid)])
        index.append((label(m), "certified"))
        if m in exact_by_method:
            res = exact_by_method[m]
            lo, hi = robust_error_interval(res.lower, res.upper, grid)
            rows.append([f"{100 * a:.1f}" if a == b else f"{100 * a:.1f}-{100 * b:.1f}" for a, b in zip(lo, hi)])
            index.append((label(m), "exact"))
        if m in attack_by_method:
            rows.append([f"{100 * v:.1f}" for v in robust_error_curve(attack_by_method[m], grid)])
            index.append((label(m), "attack"))
    return pd.DataFrame(rows, columns=cols, index=pd.MultiIndex.from_tuples(index, names=["method", "bound"]))
