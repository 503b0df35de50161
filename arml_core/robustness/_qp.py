"""The least-distance QP ``min ||eta|| s.t. A eta <= h`` (``ARML_NOTES.md`` sections 5 and 7).

Both exact solvers reduce to it: the 1-NN minimal perturbation (one QP per negative,
:mod:`.exact`) and the region attack (one QP per region, :mod:`.attacks.region`).
Here: Lawson-Hanson's LDP algorithm on a few rows (:func:`ldp`), the working-set loop
around it (:func:`solve_working_set`), and the cvxpy/Clarabel solve with fallback
tolerances used by the slow references (:func:`clarabel_solve`). CPU, numpy float64.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
from scipy.optimize import nnls

N_INIT = 4  # rows in the first working set
N_ADD = 4  # most violated rows added per working-set iteration
_INFEASIBLE_RES = 1e-10  # LDP residual norm below this means the working set is infeasible
CLARABEL_SETTINGS = (  # tight first (tiny radii need them), then up to Clarabel's defaults
    dict(tol_gap_abs=1e-12, tol_gap_rel=1e-11, tol_feas=1e-11, tol_ktratio=1e-9, max_iter=400),
    dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400),
    dict(tol_gap_abs=1e-8, tol_gap_rel=1e-8, tol_feas=1e-8, tol_ktratio=1e-6, max_iter=200),
)

SOLVED, INFEASIBLE, ABANDONED, NOT_CONVERGED = "solved", "infeasible", "abandoned", "not converged"


class ConvergenceError(RuntimeError):
    """An inner exact solve did not converge within its iteration limit."""


def ldp(Aw, hw):
    """min ||eta|| s.t. Aw eta <= hw (Lawson-Hanson LDP via NNLS).  None when infeasible."""
    k = Aw.shape[1]
    E = np.empty((k + 1, Aw.shape[0]))
    E[:k] = -Aw.T
    E[k] = -hw
    f = np.zeros(k + 1)
    f[k] = 1.0
    try:
        u, _ = nnls(E, f)
    except RuntimeError:
        try:
            u, _ = nnls(E, f, maxiter=50 * (Aw.shape[0] + k + 1))
        except RuntimeError:
            raise ConvergenceError("the inner NNLS (least-distance) solve did not converge") from None
    r = E @ u - f
    if np.linalg.norm(r) <= _INFEASIBLE_RES or r[k] >= 0.0:
        return None
    return -r[:k] / r[k]


def solve_working_set(
    row: Callable[[int], tuple],
    violations: Callable[[np.ndarray], np.ndarray],
    initial,
    n_rows: int,
    *,
    best: float,
    tol: float,
    max_iter: int,
):
    """Exact least-distance QP over ``n_rows`` half-spaces ``a_r . eta <= h_r`` (unit ``a_r``)
    by a working set: solve the LDP on the rows of the set, check every row, add the (at
    most ``N_ADD``) most violated, repeat until no row is violated by more than
    ``tol * max(1, ||eta||)`` (a Euclidean distance outside the half-space). The optimum
    over the set that satisfies every row is the optimum of the QP. The relaxation values
    increase monotonically and are lower bounds, so the solve is abandoned as soon as one
    reaches ``best``.

    ``row(r)`` gives ``(a_r, h_r)``; ``violations(eta)`` the distances of ``eta`` outside
    every row (a fresh array of length ``n_rows``); ``initial`` the first working set (in
    this order). Returns ``(status, value, eta)``: ``(SOLVED, ||eta||, eta)``, or
    ``(INFEASIBLE | ABANDONED | NOT_CONVERGED, inf, None)`` (``NOT_CONVERGED``: ``max_iter``
    iterations). A failing NNLS raises :class:`ConvergenceError`.
    """
    in_set = np.zeros(n_rows, dtype=bool)
    A_rows, h_rows = [], []

    def add(ix):
        for r in ix:
            r = int(r)
            in_set[r] = True
            a, h = row(r)
            A_rows.append(a)
            h_rows.append(h)

    add(initial)
    for _ in range(max_iter):
        eta = ldp(np.asarray(A_rows), np.asarray(h_rows))
        if eta is None:  # the rows of the set already exclude every eta
            return INFEASIBLE, math.inf, None
        val = float(np.linalg.norm(eta))
        if val >= best:  # the relaxation already loses; the exact value is larger still
            return ABANDONED, math.inf, None
        v = violations(eta)
        v[in_set] = -np.inf
        viol = np.flatnonzero(v > tol * max(1.0, val))
        if len(viol) == 0:
            return SOLVED, val, eta
        if len(viol) > N_ADD:
            viol = viol[np.argpartition(-v[viol], N_ADD - 1)[:N_ADD]]
        add(viol)
    return NOT_CONVERGED, math.inf, None


def clarabel_solve(prob, cp):
    """Solve a cvxpy problem with tight Clarabel tolerances, relaxing them when Clarabel
    gives up. Returns ``(status, error message or None)``."""
    err = None
    for opts in CLARABEL_SETTINGS:
        try:
            with warnings.catch_warnings():  # "may be inaccurate": the status says it
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver=cp.CLARABEL, **opts)
        except cp.error.SolverError as exc:
            err = str(exc)
            continue
        if prob.status in ("optimal", "infeasible"):
            return prob.status, None
        err = f"status {prob.status!r}"
    return prob.status, err
