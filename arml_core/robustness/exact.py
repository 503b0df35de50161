"""Exact minimal l2 adversarial perturbation of Mahalanobis 1-NN (``ARML_NOTES.md`` section 5).

For a correctly classified test point ``x`` (label ``y``), with ``P`` the training points
of class ``y``, the smallest ``||delta||_2`` that changes the 1-NN prediction is

    eps*(x) = min over negatives n (y_n != y) of
              min ||delta||  s.t.  A delta <= b,
              A_p = 2 (p - n)^T M,  b_p = d_M(x, p) - d_M(x, n)   (one row per p in P),

i.e. the Euclidean distance from ``x`` to the closest point that is at least as close to
some other-class point ``n`` as to every same-class point.  Every inner problem is a
convex QP (a *least-distance problem*); with ``box=(lo, hi)`` the rows
``+I delta <= hi - x`` and ``-I delta <= x - lo`` are added.

Two solvers, both exact:

``solver='fast'`` (default)
    1. *Screening* (torch, float64, on ``device``, chunked so memory stays bounded):
       for every negative ``n`` a lower bound
       ``L_n = max_{p in S} [d_M(x, n) - d_M(x, p)]_+ / (2 ||M (p - n)||)`` -- the
       distance to one half-space of the QP, so a valid bound for any subset ``S``.  ``S``
       is the ``n_screen_near`` nearest same-class points of ``x`` plus ``n_screen``
       same-class points drawn once per class with a fixed seed.
    2. Negatives are visited in increasing ``L_n``; the search stops as soon as the best
       exact value found is ``<= L_n`` of the next negative, which is exact.
    3. Each QP is solved exactly by a cutting-plane / working-set scheme (CPU, numpy
       float64): a small working set ``W`` of constraints is kept, the least-distance
       problem on ``W`` is solved exactly with Lawson-Hanson's LDP algorithm
       (``scipy.optimize.nnls``), every constraint of the full QP is then checked and the
       most violated ones join ``W``, until none is violated by more than
       ``tol * max(1, ||delta||)`` (a Euclidean distance outside the half-space).  The
       optimum over ``W`` that satisfies all rows is the optimum of the full QP.  The
       relaxation values increase monotonically and are lower bounds, so a negative is
       abandoned as soon as its value reaches the best one already found.  Before the
       first solve the exact single-constraint bound over *all* of ``P`` is used the
       same way.
    The metric is handled in its eigenbasis: without a box the QP lives in the range of
    ``M`` (``rank(M)`` variables, the optimal ``delta`` has no component in the null
    space); with a box it is solved in all ``D`` coordinates.

``solver='cvxpy'``
    The slow, independent reference: the QP of *every* negative is solved with cvxpy
    (Clarabel) and the minimum is taken.  Meant for small problems and for testing.

``verify_perturbations`` checks answers against ``MahalanobisKNN(M, 1)`` itself.

Non-convergence is never silent.  With ``strict=True`` (default) a working-set loop that
reaches ``max_iter`` iterations (or an inner NNLS that fails) raises
:class:`ConvergenceError`, naming the test point; with ``strict=False`` that point gets
``norm = nan`` and a NaN ``delta`` row, and one ``sklearn.exceptions.ConvergenceWarning``
lists the affected points.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ..device import resolve_device
from .._validation import check_box as _check_box
from .._validation import check_train_test
from ..knn import MahalanobisKNN, pairwise_sq_dists
from ..metric import check_metric, components_from_metric

__all__ = ["ConvergenceError", "minimal_perturbations", "verify_perturbations", "SOLVERS"]

SOLVERS = ("fast", "cvxpy")
_SCREEN_ELEMENTS = 2**22  # (test points x training points) entries held at once
_FOLD_ELEMENTS = 2**18  # entries per elementwise screening step (small ones stay in cache)
_DEN_REL = 1e-4  # screening terms whose ||M (p - n)|| is below this (relative) are dropped
_ROW_REL = 1e-4  # QP row norms below this (relative, via expansion) are recomputed directly
_TIE_REL = 1e-12  # nearest other/same-class squared distances this close (relative) are a tie
_INFEASIBLE_RES = 1e-10  # LDP residual norm below this means the working set is infeasible
_N_INIT = 4  # constraints in the initial working set
_N_ADD = 4  # most violated constraints added per iteration
_BOX_TOL = 1e-9
_CLARABEL_SETTINGS = (  # tight first (tiny radii need them), then up to Clarabel's defaults
    dict(tol_gap_abs=1e-12, tol_gap_rel=1e-11, tol_feas=1e-11, tol_ktratio=1e-9, max_iter=400),
    dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400),
    dict(tol_gap_abs=1e-8, tol_gap_rel=1e-8, tol_feas=1e-8, tol_ktratio=1e-6, max_iter=200),
)


class ConvergenceError(RuntimeError):
    """An inner exact solve did not converge within its iteration limit."""


# --------------------------------------------------------------------------- validation
def _check_data(X_train, y_train, X_test, y_test):
    X_train, y_train, X_test, y_test = check_train_test(X_train, y_train, X_test, y_test)
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError(
            f"the training labels hold a single class ({classes[0] if len(classes) else 'none'}); "
            "an adversarial perturbation needs at least two classes"
        )
    return X_train, y_train, X_test, y_test


def _check_options(solver, tol, max_iter):
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _metric_factors(M):
    """``G`` (r x D) with ``G^T G = M``, its eigenvalues ``w`` and orthonormal basis ``V`` (D x r)."""
    G = components_from_metric(M)
    w = (G * G).sum(1)
    if not np.any(w > 0):
        raise ValueError("M is the zero matrix: every point is at distance 0 from every other")
    V = (G / np.sqrt(w)[:, None]).T
    return G, w, V


# --------------------------------------------------------------------------- public API
def minimal_perturbations(
    X_train,
    y_train,
    X_test,
    y_test,
    M=None,
    *,
    box=None,
    solver: str = "fast",
    device: str = "auto",
    tol: float = 1e-9,
    max_iter: int = 1000,
    strict: bool = True,
    n_screen: int = 32,
    n_screen_near: int = 8,
    random_state: int = 0,
    progress: Callable[[int, int], None] | None = None,
):
    """Exact minimal l2 adversarial perturbations of Mahalanobis 1-NN.

    Parameters
    ----------
    X_train, y_train, X_test, y_test : arrays
        Training set of the 1-NN classifier and the points to attack.
    M : (D, D) PSD array or None
        The Mahalanobis matrix (may be low-rank); ``None`` is the Euclidean metric.
    box : None or (lo, hi)
        Scalars or length-D arrays (``-inf``/``inf`` allowed); requires
        ``lo <= x + delta <= hi``.  A test point outside the box (min-max scaled test
        data can exceed ``[0, 1]`` slightly) is allowed: ``x + delta`` must still end in
        the box, so its norm includes the move into it; a misclassified ``x`` gets 0.
    solver : 'fast' or 'cvxpy'
        See the module docstring; both are exact, 'cvxpy' is the slow reference.
    device : 'auto', 'cpu' or 'cuda'
        Where the screening (distances, lower bounds) runs, in float64.  The per-negative
        least-distance solves always run on the CPU in float64 (numpy / scipy NNLS).
    tol : float
        Constraint tolerance of the working-set loop: a row counts as satisfied when
        ``x + delta`` lies at most ``tol * max(1, ||delta||)`` outside its half-space.
    max_iter : int
        Cap on working-set iterations per (test point, negative) QP.
    strict : bool
        True: non-convergence raises :class:`ConvergenceError`.  False: the point gets
        ``nan`` (norm and delta row) and a ``ConvergenceWarning`` is emitted.
    n_screen, n_screen_near, random_state
        Size of the screening subset (random same-class points per class, nearest
        same-class points per test point) and the seed of the random part.  They only
        affect speed, never the result.
    progress : callable(done, total) or None
        Called as test points are finished.

    Returns
    -------
    norms : (n_test,) array
        ``eps*`` per test point; 0 for points that 1-NN already misclassifies (including
        labels absent from the training set); ``inf`` when no adversarial point exists in
        the box; ``nan`` for non-converged points (``strict=False`` only).
    deltas : (n_test, D) array
        The minimiser: ``x + delta`` lies on the decision boundary.  Zero rows for
        misclassified points, NaN rows where the norm is ``inf`` or ``nan``.
    """
    _check_options(solver, tol, max_iter)
    X_train, y_train, X_test, y_test = _check_data(X_train, y_train, X_test, y_test)
    D = X_train.shape[1]
    M = np.eye(D) if M is None else check_metric(M, D)
    bounds = _check_box(box, X_test)
    if solver == "fast":
        for name, val in (("n_screen", n_screen), ("n_screen_near", n_screen_near)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {val!r}")
        dev = resolve_device(device)
        return _fast(
            X_train, y_train, X_test, y_test, M, bounds, dev, float(tol), int(max_iter),
            bool(strict), int(n_screen), int(n_screen_near), random_state, progress,
        )
    resolve_device(device)  # validate the argument even though the reference is CPU-only
    return _reference_cvxpy(X_train, y_train, X_test, y_test, M, bounds, bool(strict), progress)


# --------------------------------------------------------------------------- fast solver
class _ClassData:
    """Per-class arrays shared by all test points of that class."""

    def __init__(self, c, y_train, C, Cs_t, sqCs_t, dev, n_screen, rng, den_thr):
        self.pos = np.flatnonzero(y_train == c)
        self.neg = np.flatnonzero(y_train != c)
        self.CP = np.ascontiguousarray(C[self.pos])
        self.sqCP = (self.CP * self.CP).sum(1)
        self.pos_t = torch.as_tensor(self.pos, device=dev)
        n_r = min(n_screen, len(self.pos))
        rand = np.sort(rng.choice(self.pos, size=n_r, replace=False)) if n_r else np.zeros(0, np.int64)
        self.rand_t = torch.as_tensor(rand, device=dev)
        # 1 / (2 ||M (p - n)||) for the random screening rows against every training point
        self.invDR = _inv_den(Cs_t[self.rand_t], Cs_t, sqCs_t, den_thr)


def _inv_den(CsA, Cs_t, sqCs_t, den_thr):
    """``1 / (2 ||M (a - t)||)`` for rows ``a`` against all training points ``t``; 0 where the
    norm is below ``den_thr`` (such a term is dropped from the bound, which keeps it valid)."""
    den = pairwise_sq_dists(CsA, Cs_t, sqCs_t).sqrt_()
    ok = den > den_thr
    return torch.where(ok, 0.5 / torch.where(ok, den, 1.0), torch.zeros((), dtype=den.dtype, device=den.device))


def _screen(D2b, cd: _ClassData, n_near, Cs_t, sqCs_t, den_thr):
    """Lower bounds (B x N_train) on the QP value of every training point taken as the
    negative, from a subset of the rows (columns of same-class points are meaningless)."""
    B, N = D2b.shape
    L = torch.zeros_like(D2b)
    blk = max(1, _FOLD_ELEMENTS // max(1, B * N))

    def fold(L, d_rows, inv_den):  # d_rows: (B, s) distances to the rows' points
        for a in range(0, d_rows.shape[1], blk):
            if blk == 1:
                T = (D2b - d_rows[:, a : a + 1]).clamp_min_(0.0).mul_(inv_den(a, a + 1)[:, 0])
            else:
                T = (D2b[:, None, :] - d_rows[:, a : a + blk, None]).clamp_min_(0.0)
                T = T.mul_(inv_den(a, a + blk)).amax(1)
            L = torch.maximum(L, T, out=L)
        return L

    if len(cd.rand_t):
        L = fold(L, D2b[:, cd.rand_t], lambda a, b: cd.invDR[None, a:b, :])
    k = min(n_near, len(cd.pos))
    if k:
        dnear, inear = torch.topk(D2b[:, cd.pos_t], k, dim=1, largest=False, sorted=True)
        uniq, inv = torch.unique(cd.pos_t[inear], return_inverse=True)
        invDU = _inv_den(Cs_t[uniq], Cs_t, sqCs_t, den_thr)
        L = fold(L, dnear, lambda a, b: invDU[inv[:, a:b]])
    return L


def _ldp(Aw, hw):
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


def _solve_point(i, x, d2, L, cd: _ClassData, ctx):
    """Exact eps* for one correctly classified test point; returns (norm, eta) or raises."""
    zx = ctx["zx"][i]
    dP = d2[cd.pos]
    dN = d2[cd.neg]
    CP, sqCP = cd.CP, cd.sqCP
    nP, k = CP.shape
    box = ctx["bounds"]
    if box is not None:
        up = box[1] - x  # +eta <= up
        dn = x - box[0]  # -eta <= dn
        fin_up, fin_dn = np.isfinite(up), np.isfinite(dn)
    max_iter, tol = ctx["max_iter"], ctx["tol"]
    row_thr = ctx["row_thr"]
    best, best_eta = math.inf, None
    order = np.argsort(L, kind="stable")
    for j in order:
        if L[j] >= best:
            break
        n = cd.neg[j]
        cn = ctx["C"][n]
        CPc = CP @ cn
        rown2 = sqCP + ctx["sqC"][n] - 2.0 * CPc
        rown = np.sqrt(np.maximum(rown2, 0.0))
        small = rown < row_thr
        if small.any():  # recompute near-degenerate rows without cancellation
            rown[small] = np.linalg.norm(CP[small] - cn, axis=1)
        valid = rown > ctx["zero_row"]
        half_b = 0.5 * (dP - dN[j])  # the row  (c_p - c_n) . eta <= b_p / 2
        inv_r = np.where(valid, 1.0 / np.where(valid, rown, 1.0), 0.0)
        h = np.where(valid, half_b * inv_r, np.inf)  # normalised right-hand sides
        viol0 = -h
        if max(0.0, float(viol0.max())) >= best:
            continue  # the exact single-constraint bound over all of P already loses
        # working set: rows 0..nP-1 are P, then D upper and D lower box rows
        W = list(np.argpartition(-viol0, min(_N_INIT, nP) - 1)[: min(_N_INIT, nP)])
        W = [int(w) for w in W if viol0[w] > -np.inf]
        inW = np.zeros(nP + (2 * k if box is not None else 0), dtype=bool)
        inW[W] = True
        rows, rhs = [], []
        d_xn = float(((zx - ctx["Zg"][n]) ** 2).sum())  # exact d_M(x, n) for the working rows

        def add_rows(idx):
            for p in idx:
                p = int(p)
                inW[p] = True
                if p < nP:
                    diff = CP[p] - cn
                    nr = float(np.linalg.norm(diff))
                    half_bp = 0.5 * (float(((zx - ctx["Zg"][cd.pos[p]]) ** 2).sum()) - d_xn)
                    rows.append(diff / nr)
                    rhs.append(half_bp / nr)
                elif p < nP + k:
                    e = np.zeros(k)
                    e[p - nP] = 1.0
                    rows.append(e)
                    rhs.append(up[p - nP])
                else:
                    e = np.zeros(k)
                    e[p - nP - k] = -1.0
                    rows.append(e)
                    rhs.append(dn[p - nP - k])

        add_rows(W)
        converged = False
        for _ in range(max_iter):
            try:
                eta = _ldp(np.asarray(rows), np.asarray(rhs))
            except ConvergenceError as exc:
                raise ConvergenceError(f"test point {i}: {exc} (negative: training index {n})") from None
            if eta is None:  # infeasible: no adversarial point for this negative
                converged = True
                break
            val = float(np.linalg.norm(eta))
            if val >= best:  # the relaxation already loses; exact value is larger still
                converged = True
                break
            thr = tol * max(1.0, val)
            v = (CP @ eta - cn @ eta) * inv_r - h
            if box is not None:
                vb = np.concatenate([np.where(fin_up, eta - up, -np.inf), np.where(fin_dn, -eta - dn, -np.inf)])
                v = np.concatenate([v, vb])
            v[inW] = -np.inf
            m = int(np.argmax(v))
            if not v[m] > thr:
                best, best_eta = val, eta
                converged = True
                break
            cand = np.flatnonzero(v > thr)
            if len(cand) > _N_ADD:
                cand = cand[np.argpartition(-v[cand], _N_ADD - 1)[:_N_ADD]]
            add_rows(cand)
        if not converged:
            raise ConvergenceError(
                f"test point {i}: the working-set solve for negative (training index {n}) "
                f"did not converge in max_iter={max_iter} iterations"
            )
    return best, best_eta


def _fast(X_train, y_train, X_test, y_test, M, bounds, dev, tol, max_iter, strict,
          n_screen, n_near, random_state, progress):
    n_test, D = X_test.shape
    norms = np.zeros(n_test)
    deltas = np.zeros((n_test, D))
    if n_test == 0:
        return norms, deltas
    classes, y_enc = np.unique(y_train, return_inverse=True)
    G, w, V = _metric_factors(M)
    # the large products run in torch (multi-threaded / on the device)
    G_t = torch.as_tensor(G, device=dev)
    Zg_t = torch.as_tensor(X_train, device=dev) @ G_t.T  # d_M(a, b) = ||Zg_a - Zg_b||^2
    sqZg_t = (Zg_t * Zg_t).sum(1)
    Zx_t = torch.as_tensor(X_test, device=dev) @ G_t.T
    # Cs = M (p - n) expressed in the eigenbasis V: same row norms as C, r <= D columns
    Cs_t = Zg_t * torch.as_tensor(np.sqrt(w), device=dev)[None, :]
    sqCs_t = (Cs_t * Cs_t).sum(1)
    y_t = torch.as_tensor(y_enc, device=dev)
    Zg, Zx = Zg_t.cpu().numpy(), Zx_t.cpu().numpy()
    if bounds is None:  # eigen-coordinates eta (delta = V eta): the QP rows are Cs
        C = Cs_t.cpu().numpy()
    else:  # full input coordinates (the box needs them): rows M (p - n)
        C = (torch.as_tensor(X_train, device=dev) @ torch.as_tensor(M, device=dev)).cpu().numpy()
    sqC = (C * C).sum(1)
    cscale = max(float(np.sqrt(sqC.max())), 1e-300)
    den_thr = _DEN_REL * cscale

    # encode test labels; labels absent from training are misclassified by construction
    pos_of = {c: k for k, c in enumerate(classes.tolist())}
    yt_enc = np.array([pos_of.get(c, -1) for c in y_test.tolist()])

    # 1-NN prediction (same distances and tie rule as MahalanobisKNN: topk on pairwise_sq_dists)
    # A point whose nearest other-class distance ties its nearest same-class one (within
    # round-off) sits on the boundary: its radius is 0 whichever way the tie is broken
    # (the tie rule can differ between batchings of the same matmul).
    pred = np.empty(n_test, dtype=np.int64)
    tied = np.zeros(n_test, dtype=bool)
    yt_t = torch.as_tensor(yt_enc, device=dev)
    sq_max = sqZg_t.max()
    step = max(1, _SCREEN_ELEMENTS // max(1, len(X_train)))
    for s in range(0, n_test, step):
        d = pairwise_sq_dists(Zx_t[s : s + step], Zg_t, sqZg_t)
        pred[s : s + step] = y_t[torch.topk(d, 1, dim=1, largest=False).indices[:, 0]].cpu().numpy()
        same = y_t[None, :] == yt_t[s : s + step, None]
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=dev)
        d_same = torch.where(same, d, inf).min(1).values
        d_other = torch.where(same, inf, d).min(1).values
        # round-off of the expanded distances is about eps * (||zx||^2 + ||zg||^2)
        scale = (Zx_t[s : s + step] ** 2).sum(1) + sq_max
        tied[s : s + step] = (d_other <= d_same + _TIE_REL * scale).cpu().numpy()
    correct = (pred == yt_enc) & ~tied

    done = int((~correct).sum())
    if progress is not None and done:
        progress(done, n_test)

    ctx = dict(
        zx=Zx, Zg=Zg, C=C, sqC=sqC, bounds=bounds, max_iter=max_iter, tol=tol,
        row_thr=_ROW_REL * cscale, zero_row=1e-13 * cscale,
    )
    basis = V if bounds is None else None
    failed = []
    # The CPU part is many small matrix-vector products (numpy): multi-threaded BLAS only
    # adds contention there (torch keeps its own thread pool), so it runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        for c in np.unique(yt_enc[correct]):
            idx = np.flatnonzero(correct & (yt_enc == c))
            rng = np.random.default_rng([int(random_state or 0) & 0xFFFFFFFF, int(c)])
            cd = _ClassData(c, y_enc, C, Cs_t, sqCs_t, dev, n_screen, rng, den_thr)
            # screening batch: B x N distances, and up to B * n_near rows of B x N denominators
            bsz = max(1, _FOLD_ELEMENTS // len(X_train))
            for s in range(0, len(idx), bsz):
                bidx = idx[s : s + bsz]
                D2b_t = pairwise_sq_dists(Zx_t[bidx], Zg_t, sqZg_t)
                Lb = _screen(D2b_t, cd, n_near, Cs_t, sqCs_t, den_thr).cpu().numpy()[:, cd.neg]
                D2b = D2b_t.cpu().numpy()
                del D2b_t
                for t, i in enumerate(bidx):
                    try:
                        val, eta = _solve_point(int(i), X_test[i], D2b[t], Lb[t], cd, ctx)
                    except ConvergenceError:
                        if strict:
                            raise
                        failed.append(int(i))
                        norms[i] = np.nan
                        deltas[i] = np.nan
                    else:
                        norms[i] = val
                        if eta is None:
                            deltas[i] = np.nan
                        else:
                            deltas[i] = basis @ eta if basis is not None else eta
                    done += 1
                    if progress is not None:
                        progress(done, n_test)
    if failed:
        warnings.warn(
            f"minimal_perturbations: {len(failed)} test point(s) did not converge within "
            f"max_iter={max_iter} and were set to NaN (indices {failed[:10]}"
            f"{' ...' if len(failed) > 10 else ''})",
            ConvergenceWarning,
            stacklevel=3,
        )
    return norms, deltas


# --------------------------------------------------------------------------- reference
def _clarabel_solve(prob, cp):
    """Solve with tight Clarabel tolerances, relaxing them when Clarabel gives up."""
    err = None
    for opts in _CLARABEL_SETTINGS:
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


def _reference_cvxpy(X_train, y_train, X_test, y_test, M, bounds, strict, progress):
    import cvxpy as cp

    n_test, D = X_test.shape
    norms = np.zeros(n_test)
    deltas = np.zeros((n_test, D))
    if n_test == 0:
        return norms, deltas
    knn = MahalanobisKNN(M, n_neighbors=1, device="cpu").fit(X_train, y_train)
    correct = knn.predict(X_test) == y_test
    done = int((~correct).sum())
    if progress is not None and done:
        progress(done, n_test)
    failed = []
    problems = {}
    for i in np.flatnonzero(correct):
        x, c = X_test[i], y_test[i]
        P = X_train[y_train == c]
        Nn = X_train[y_train != c]
        if c not in problems:
            A_par = cp.Parameter((len(P), D))
            b_par = cp.Parameter(len(P))
            d = cp.Variable(D)
            cons = [A_par @ d <= b_par]
            lo_par = hi_par = None
            if bounds is not None:
                lo_par, hi_par = cp.Parameter(D), cp.Parameter(D)
                cons += [d >= lo_par, d <= hi_par]
            problems[c] = (cp.Problem(cp.Minimize(cp.sum_squares(d)), cons), A_par, b_par, d, lo_par, hi_par)
        prob, A_par, b_par, d, lo_par, hi_par = problems[c]
        if bounds is not None:
            # infinite bounds are replaced by a far finite value (never active)
            far = 1e6 * (1.0 + float(np.abs(X_train).max()))
            lo_par.value = np.maximum(bounds[0] - x, -far)
            hi_par.value = np.minimum(bounds[1] - x, far)
        dxP = np.einsum("ij,jk,ik->i", P - x, M, P - x)
        dxN = np.einsum("ij,jk,ik->i", Nn - x, M, Nn - x)
        PM = P @ M
        best, best_d, bad = math.inf, None, None
        for j in range(len(Nn)):
            A = 2.0 * (PM - Nn[j] @ M)
            b = dxP - dxN[j]
            nr = np.linalg.norm(A, axis=1)
            ok = nr > 1e-12 * max(1.0, float(nr.max()))
            A_par.value = np.where(ok[:, None], A / np.where(ok, nr, 1.0)[:, None], 0.0)
            b_par.value = np.where(ok, b / np.where(ok, nr, 1.0), 1.0)
            status, err = _clarabel_solve(prob, cp)
            sol = d
            if status not in ("optimal", "infeasible"):
                # the parametric (DPP) form occasionally stalls; a freshly built problem
                # with the numbers inlined is canonicalised differently and usually solves
                sol = cp.Variable(D)
                cons = [A_par.value @ sol <= b_par.value]
                if bounds is not None:
                    cons += [sol >= lo_par.value, sol <= hi_par.value]
                fresh = cp.Problem(cp.Minimize(cp.sum_squares(sol)), cons)
                status, err = _clarabel_solve(fresh, cp)
                prob_val = fresh.value
            else:
                prob_val = prob.value
            if status in ("infeasible", "infeasible_inaccurate"):
                continue
            if status not in ("optimal", "optimal_inaccurate"):
                bad = f"cvxpy/Clarabel failed on negative {j}: {err or status}"
                break
            val = math.sqrt(max(prob_val, 0.0))
            if val < best:
                best, best_d = val, np.array(sol.value)
        if bad is not None:
            if strict:
                raise ConvergenceError(f"test point {int(i)}: {bad}")
            failed.append(int(i))
            norms[i], deltas[i] = np.nan, np.nan
        else:
            norms[i] = best
            deltas[i] = np.nan if best_d is None else best_d
        done += 1
        if progress is not None:
            progress(done, n_test)
    if failed:
        warnings.warn(
            f"minimal_perturbations(solver='cvxpy'): {len(failed)} test point(s) failed and "
            f"were set to NaN (indices {failed[:10]})",
            ConvergenceWarning,
            stacklevel=3,
        )
    return norms, deltas


# --------------------------------------------------------------------------- verification
def verify_perturbations(
    X_train, y_train, X_test, y_test, M, norms, deltas, rtol: float = 1e-4, *, box=None,
    device: str = "auto",
) -> np.ndarray:
    """Check perturbations against the real classifier ``MahalanobisKNN(M, 1)``.

    Per test point, True when:

    * 1-NN misclassifies ``x`` and ``norm == 0``;
    * 1-NN classifies ``x`` correctly, ``norm > 0`` is finite, ``||delta|| == norm``
      (relative ``rtol``), ``x + (1 - rtol) delta`` is still classified correctly, and a
      point within ``(1 + rtol) * norm`` of ``x`` is classified differently: first
      ``x + (1 + rtol) delta``; when the optimum sits on a vertex of the adversarial cell
      the ray may leave the cell there, so ``x + delta`` nudged by ``rtol * norm`` towards
      its nearest other-class training point is accepted as well;
    * 1-NN classifies ``x`` correctly and ``norm == 0``: ``x`` must be on the boundary
      (an other-class training point as close as the nearest same-class one);
    * ``norm == inf`` (no adversarial point in the box): accepted, it cannot be checked
      this way.
    With ``box``, ``x + delta`` must also lie in the box; for a test point outside the
    box the ``(1 - rtol)`` check is skipped (points outside the box closer than ``norm``
    may legitimately be adversarial).  NaN norms fail.
    """
    X_train, y_train, X_test, y_test = _check_data(X_train, y_train, X_test, y_test)
    norms = np.asarray(norms, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    if norms.shape != (len(X_test),) or deltas.shape != X_test.shape:
        raise ValueError(
            f"norms must have shape {(len(X_test),)} and deltas {X_test.shape}, got "
            f"{norms.shape} and {deltas.shape}"
        )
    bounds = _check_box(box, X_test)
    knn = MahalanobisKNN(M, n_neighbors=1, device=device).fit(X_train, y_train)
    ok = np.zeros(len(X_test), dtype=bool)
    correct = knn.predict(X_test) == y_test
    ok[~correct] = norms[~correct] == 0

    zero = correct & (norms == 0)
    if zero.any():
        dist, idx = knn.kneighbors(X_test[zero], n_neighbors=len(X_train))
        for r, i in enumerate(np.flatnonzero(zero)):
            lab = y_train[idx[r]]
            d_same = dist[r][lab == y_test[i]].min()
            d_other = dist[r][lab != y_test[i]].min()
            ok[i] = d_other <= d_same * (1 + 1e-9) + 1e-12
    ok[correct & np.isinf(norms)] = True

    sel = np.flatnonzero(correct & np.isfinite(norms) & (norms > 0))
    if len(sel):
        x, dl, nm, y = X_test[sel], deltas[sel], norms[sel], y_test[sel]
        good = np.all(np.isfinite(dl), axis=1)
        dl = np.where(good[:, None], dl, 0.0)
        good &= np.abs(np.linalg.norm(dl, axis=1) - nm) <= rtol * nm
        inside = knn.predict(x + (1 - rtol) * dl) == y
        flip_ray = knn.predict(x + (1 + rtol) * dl) != y
        z = x + dl
        if bounds is not None:
            lo, hi = bounds
            sc = _BOX_TOL * max(1.0, float(np.abs(z).max()))
            x_out = np.any((x < lo - sc) | (x > hi + sc), axis=1)
            inside |= x_out
        # where the ray leaves the adversarial cell (an optimum at a vertex of it), step
        # rtol * norm from x + delta towards its nearest other-class training point instead
        flip_nudge = np.zeros(len(sel), dtype=bool)
        G = knn.components_
        for t in np.flatnonzero(~flip_ray & good & inside):
            other = np.flatnonzero(y_train != y[t])
            dd = (((X_train[other] - z[t]) @ G.T) ** 2).sum(1)
            step = X_train[other[int(np.argmin(dd))]] - z[t]
            sn = np.linalg.norm(step)
            if sn > 0:
                zn = z[t] + step * min(1.0, rtol * nm[t] / sn)
                flip_nudge[t] = knn.predict(zn[None, :])[0] != y[t]
        res = good & inside & (flip_ray | flip_nudge)
        if bounds is not None:
            res &= np.all((z >= lo - sc) & (z <= hi + sc), axis=1)
        ok[sel] = res
    return ok
