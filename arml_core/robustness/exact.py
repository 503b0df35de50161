"""Exact minimal l2 adversarial perturbation of Mahalanobis 1-NN (``ARML_NOTES.md`` section 5).

:func:`minimal_perturbations` returns ``eps*`` and the minimiser ``delta*`` of every test
point: the smallest of one least-distance QP per other-class training point (the
*negative*), optionally inside a box. Two solvers, both exact: the screened working-set
solver (:func:`_solve_screened`, the default) and the slow cvxpy reference
(:func:`_reference_cvxpy`). :func:`verify_perturbations` checks answers against
``MahalanobisKNN(M, 1)`` itself. The QP machinery (LDP, working set, Clarabel) lives in
:mod:`._qp`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from .._validation import PointProgress, box_slack, check_box, check_choice, check_data, check_integer, check_number
from ..device import resolve_device
from ..knn import MahalanobisKNN, check_n_neighbors, pairwise_sq_dists
from ..metric import components_from_metric, triplet_margin
from ._qp import ABANDONED, N_INIT, NOT_CONVERGED, SOLVED, ConvergenceError, clarabel_solve, solve_working_set
from .exact_knn import minimal_perturbations_knn

__all__ = ["ConvergenceError", "minimal_perturbations", "verify_perturbations", "SOLVERS"]

SOLVERS = ("fast", "cvxpy")
_SCREEN_ELEMENTS = 2**22  # (test points x training points) entries held at once
_FOLD_ELEMENTS = 2**18  # entries per elementwise screening step (small ones stay in cache)
_DEN_REL = 1e-4  # screening terms whose ||M (p - n)|| is below this (relative) are dropped
_ROW_REL = 1e-4  # QP row norms below this (relative, via expansion) are recomputed directly
_TIE_REL = 1e-12  # nearest other/same-class squared distances this close (relative) are a tie


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
    progress: PointProgress | None = None,
    n_neighbors: int = 1, **options,
):
    """Exact minimal l2 adversarial perturbations of Mahalanobis 1-NN (and K-NN: ``n_neighbors``).

    For a correctly classified ``x`` (label ``y``, same-class training points ``P``),
    ``eps*(x)`` is the minimum over negatives ``n`` of the least-distance QP
    ``min ||delta|| s.t. 2 (p - n)^T M delta <= d_M(x, p) - d_M(x, n)`` for every ``p`` in
    ``P`` (ARML_NOTES section 5); with ``box=(lo, hi)`` the rows ``+I delta <= hi - x`` and
    ``-I delta <= x - lo`` are added.

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
        Both exact: 'fast' screens the negatives and solves each QP by a working set
        (:func:`_solve_screened`); 'cvxpy' solves the QP of every negative with
        cvxpy/Clarabel (:func:`_reference_cvxpy`, slow; for small problems and tests).
    device : 'auto', 'cpu' or 'cuda'
        Where the screening (distances, lower bounds) runs, in float64.  The per-negative
        least-distance solves always run on the CPU in float64 (numpy / scipy NNLS).
    tol : float
        Constraint tolerance of the working-set loop: a row counts as satisfied when
        ``x + delta`` lies at most ``tol * max(1, ||delta||)`` outside its half-space.
    max_iter : int
        Cap on working-set iterations per (test point, negative) QP.
    strict : bool
        Non-convergence is never silent. True: a working-set loop that reaches
        ``max_iter`` (or an inner NNLS that fails) raises :class:`ConvergenceError`
        naming the test point.  False: that point gets ``nan`` (norm and delta row) and
        one ``ConvergenceWarning`` lists the affected points.
    n_screen, n_screen_near, random_state
        Size of the screening subset (random same-class points per class, nearest
        same-class points per test point) and the seed of the random part.  They only
        affect speed, never the result.
    progress : callable(done, total) or None
        Called as test points are finished.
    n_neighbors, **options : K > 1: :func:`.exact_knn.minimal_perturbations_knn` (its options, its result).

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
    if n_neighbors != 1 or options:  # K > 1: the order-K cell search of .exact_knn (K = 1: below)
        return minimal_perturbations_knn(X_train, y_train, X_test, y_test, M, n_neighbors=n_neighbors, box=box,
            solver=solver, device=device, tol=tol, max_iter=max_iter, strict=strict, progress=progress, **options)
    check_choice("solver", solver, SOLVERS)
    check_number("tol", tol)
    check_integer("max_iter", max_iter, 1)
    X_train, y_train, X_test, y_test, M = check_data(X_train, y_train, X_test, y_test, M)
    check_n_neighbors(1, y_train)  # at least two classes
    bounds = check_box(box, X_test)
    if solver == "fast":
        check_integer("n_screen", n_screen, 0)
        check_integer("n_screen_near", n_screen_near, 0)
        dev = resolve_device(device)
        return _solve_screened(
            X_train, y_train, X_test, y_test, M, bounds, dev, float(tol), int(max_iter),
            bool(strict), int(n_screen), int(n_screen_near), random_state, progress,
        )
    resolve_device(device)  # validate the argument even though the reference is CPU-only
    return _reference_cvxpy(X_train, y_train, X_test, y_test, M, bounds, bool(strict), progress)


def _warn_failed(failed, what):
    """One ConvergenceWarning for the test points set to NaN (``strict=False``)."""
    if failed:
        warnings.warn(
            f"minimal_perturbations{what} and were set to NaN (indices {failed[:10]}"
            f"{' ...' if len(failed) > 10 else ''})",
            ConvergenceWarning,
            stacklevel=4,
        )


# --------------------------------------------------------------------------- fast solver
@dataclass
class _ExactProblem:
    """What every point's QPs read: test and training coordinates ``Z = X G^T``, the QP
    row vectors ``C`` (one per training point; a row is ``C_p - C_n``) and their squared
    norms, the box, the working-set settings and the row-norm thresholds."""

    Zx: np.ndarray
    Zg: np.ndarray
    C: np.ndarray
    sqC: np.ndarray
    bounds: tuple | None
    max_iter: int
    tol: float
    row_thr: float  # row norms below this (from the expansion) are recomputed directly
    zero_row: float  # row norms below this are degenerate rows (dropped)


class _ClassBlock:
    """The block of one class ``c``: its training points (the positives ``P``), the others
    (the negatives) and what every test point of class ``c`` reuses: the QP rows of ``P``
    and the screening rows drawn at random from ``P`` with their reciprocal denominators."""

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


def _screen(D2b, block: _ClassBlock, n_near, Cs_t, sqCs_t, den_thr):
    """Lower bounds (B x N_train) on the QP value of every training point taken as the
    negative: the largest triplet margin ``eps_t(p, n, x)`` over a subset of the rows
    (columns of same-class points are meaningless)."""
    B, N = D2b.shape
    L = torch.zeros_like(D2b)
    step = max(1, _FOLD_ELEMENTS // max(1, B * N))

    def fold(L, d_rows, inv_den):  # d_rows: (B, s) distances to the rows' points
        for a in range(0, d_rows.shape[1], step):
            if step == 1:
                T = triplet_margin(D2b, d_rows[:, a : a + 1], inv_denominator=inv_den(a, a + 1)[:, 0])
                T = T.clamp_min_(0.0)
            else:
                T = triplet_margin(D2b[:, None, :], d_rows[:, a : a + step, None],
                                   inv_denominator=inv_den(a, a + step))
                T = T.clamp_min_(0.0).amax(1)
            L = torch.maximum(L, T, out=L)
        return L

    if len(block.rand_t):
        L = fold(L, D2b[:, block.rand_t], lambda a, b: block.invDR[None, a:b, :])
    k = min(n_near, len(block.pos))
    if k:
        dnear, inear = torch.topk(D2b[:, block.pos_t], k, dim=1, largest=False, sorted=True)
        uniq, inv = torch.unique(block.pos_t[inear], return_inverse=True)
        invDU = _inv_den(Cs_t[uniq], Cs_t, sqCs_t, den_thr)
        L = fold(L, dnear, lambda a, b: invDU[inv[:, a:b]])
    return L


def _solve_negative(zx, dP, d_n, n, block: _ClassBlock, box_rhs, pb: _ExactProblem, best):
    """The QP of one negative ``n`` (training index) for a test point with coordinates
    ``zx``, distances ``dP`` to the positives and ``d_n`` to ``n``, and box right-hand
    sides ``box_rhs = (hi - x, x - lo)`` (or None); abandoned at ``best``. Rows
    ``0..nP-1`` are the positives, then ``D`` upper and ``D`` lower box rows.
    Returns :func:`~._qp.solve_working_set`'s ``(status, value, eta)``."""
    CP = block.CP
    nP, dim = CP.shape
    cn = pb.C[n]
    rown2 = block.sqCP + pb.sqC[n] - 2.0 * (CP @ cn)
    rown = np.sqrt(np.maximum(rown2, 0.0))
    small = rown < pb.row_thr
    if small.any():  # recompute near-degenerate rows without cancellation
        rown[small] = np.linalg.norm(CP[small] - cn, axis=1)
    valid = rown > pb.zero_row
    half_b = 0.5 * (dP - d_n)  # the row  (c_p - c_n) . eta <= b_p / 2
    inv_r = np.where(valid, 1.0 / np.where(valid, rown, 1.0), 0.0)
    h = np.where(valid, half_b * inv_r, np.inf)  # normalised right-hand sides
    if max(0.0, -float(h.min())) >= best:
        return ABANDONED, math.inf, None  # the single-row bound over all of P already loses
    n0 = min(N_INIT, nP)
    initial = [int(p) for p in np.argpartition(h, n0 - 1)[:n0] if h[p] < np.inf]
    d_xn = float(((zx - pb.Zg[n]) ** 2).sum())  # exact d_M(x, n) for the working rows

    def row(p):
        if p < nP:
            diff = CP[p] - cn
            nr = float(np.linalg.norm(diff))
            half_bp = 0.5 * (float(((zx - pb.Zg[block.pos[p]]) ** 2).sum()) - d_xn)
            return diff / nr, half_bp / nr
        e = np.zeros(dim)
        if p < nP + dim:
            e[p - nP] = 1.0
            return e, box_rhs[0][p - nP]
        e[p - nP - dim] = -1.0
        return e, box_rhs[1][p - nP - dim]

    def violations(eta):
        v = (CP @ eta - cn @ eta) * inv_r - h
        if box_rhs is None:
            return v
        up, dn = box_rhs
        return np.concatenate([v, np.where(np.isfinite(up), eta - up, -np.inf),
                               np.where(np.isfinite(dn), -eta - dn, -np.inf)])

    n_rows = nP + (2 * dim if box_rhs is not None else 0)
    return solve_working_set(row, violations, initial, n_rows, best=best, tol=pb.tol, max_iter=pb.max_iter)


def _solve_point(i, x, d2, L, block: _ClassBlock, pb: _ExactProblem):
    """Exact eps* for one correctly classified test point: the negatives in increasing
    screening bound ``L``, each QP abandoned at the best value so far, the search stopped
    when the next bound reaches it. Returns (norm, eta) or raises ConvergenceError."""
    box_rhs = None if pb.bounds is None else (pb.bounds[1] - x, x - pb.bounds[0])
    dP = d2[block.pos]
    dN = d2[block.neg]
    best, best_eta = math.inf, None
    for j in np.argsort(L, kind="stable"):
        if L[j] >= best:
            break
        n = block.neg[j]
        try:
            status, val, eta = _solve_negative(pb.Zx[i], dP, dN[j], n, block, box_rhs, pb, best)
        except ConvergenceError as exc:
            raise ConvergenceError(f"test point {i}: {exc} (negative: training index {n})") from None
        if status == NOT_CONVERGED:
            raise ConvergenceError(
                f"test point {i}: the working-set solve for negative (training index {n}) "
                f"did not converge in max_iter={pb.max_iter} iterations"
            )
        if status == SOLVED:
            best, best_eta = val, eta
    return best, best_eta


class _Answers:
    """The norms and deltas being filled in, the points that failed and the progress count
    (misclassified points count as done from the start)."""

    def __init__(self, n_test, D, strict, progress):
        self.norms = np.zeros(n_test)
        self.deltas = np.zeros((n_test, D))
        self.strict, self.progress = strict, progress
        self.failed: list[int] = []
        self.done = 0

    def skip(self, n_done):
        self.done = n_done
        if self.progress is not None and n_done:
            self.progress(n_done, len(self.norms))

    def record(self, i, norm, delta, error: ConvergenceError | None = None):
        """Point ``i`` solved (``delta`` None: no adversarial point), or failed with ``error``
        (raised when strict, a NaN row otherwise)."""
        if error is not None:
            if self.strict:
                raise error
            self.failed.append(int(i))
            self.norms[i] = np.nan
            self.deltas[i] = np.nan
        else:
            self.norms[i] = norm
            self.deltas[i] = np.nan if delta is None else delta
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.norms))


def _correct_1nn(Zx_t, Zg_t, sqZg_t, y_t, yt_enc, dev):
    """Test points that 1-NN classifies correctly and not on a tie.

    Same distances and tie rule as MahalanobisKNN (topk on pairwise_sq_dists). A point
    whose nearest other-class distance ties its nearest same-class one (within round-off)
    sits on the boundary: its radius is 0 whichever way the tie is broken (the tie rule
    can differ between batchings of the same matmul)."""
    n_test = len(Zx_t)
    pred = np.empty(n_test, dtype=np.int64)
    tied = np.zeros(n_test, dtype=bool)
    yt_t = torch.as_tensor(yt_enc, device=dev)
    sq_max = sqZg_t.max()
    step = max(1, _SCREEN_ELEMENTS // max(1, len(Zg_t)))
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
    return (pred == yt_enc) & ~tied


def _solve_screened(X_train, y_train, X_test, y_test, M, bounds, dev, tol, max_iter, strict,
                    n_screen, n_near, random_state, progress):
    """The default solver: screening, then exact QPs in increasing lower bound.

    1. *Screening* (torch, float64, on ``dev``, chunked so memory stays bounded): for every
       negative ``n`` a lower bound ``L_n = max_{p in S} eps_t(p, n, x)`` -- the distance
       to one half-space of the QP, so a valid bound for any subset ``S``.  ``S`` is the
       ``n_near`` nearest same-class points of ``x`` plus ``n_screen`` same-class points
       drawn once per class with a fixed seed (:func:`_screen`).
    2. Negatives are visited in increasing ``L_n``; the search stops as soon as the best
       exact value found is ``<= L_n`` of the next negative, which is exact
       (:func:`_solve_point`).
    3. Each QP is solved exactly by the working-set loop of
       :func:`~._qp.solve_working_set` (CPU, numpy float64), abandoned as soon as its
       relaxation value reaches the best one already found; before the first solve the
       exact single-constraint bound over *all* of ``P`` is used the same way
       (:func:`_solve_negative`).
    The metric is handled in its eigenbasis: without a box the QP lives in the range of
    ``M`` (``rank(M)`` variables, the optimal ``delta`` has no component in the null
    space); with a box it is solved in all ``D`` coordinates.
    """
    n_test, D = X_test.shape
    ans = _Answers(n_test, D, strict, progress)
    if n_test == 0:
        return ans.norms, ans.deltas
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
    correct = _correct_1nn(Zx_t, Zg_t, sqZg_t, y_t, yt_enc, dev)
    ans.skip(int((~correct).sum()))

    pb = _ExactProblem(Zx=Zx_t.cpu().numpy(), Zg=Zg_t.cpu().numpy(), C=C, sqC=sqC, bounds=bounds,
                       max_iter=max_iter, tol=tol, row_thr=_ROW_REL * cscale, zero_row=1e-13 * cscale)
    basis = V if bounds is None else None
    # The CPU part is many small matrix-vector products (numpy): multi-threaded BLAS only
    # adds contention there (torch keeps its own thread pool), so it runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        for c in np.unique(yt_enc[correct]):
            idx = np.flatnonzero(correct & (yt_enc == c))
            rng = np.random.default_rng([int(random_state or 0) & 0xFFFFFFFF, int(c)])
            block = _ClassBlock(c, y_enc, C, Cs_t, sqCs_t, dev, n_screen, rng, den_thr)
            # screening batch: B x N distances, and up to B * n_near rows of B x N denominators
            bsz = max(1, _FOLD_ELEMENTS // len(X_train))
            for s in range(0, len(idx), bsz):
                bidx = idx[s : s + bsz]
                D2b_t = pairwise_sq_dists(Zx_t[bidx], Zg_t, sqZg_t)
                Lb = _screen(D2b_t, block, n_near, Cs_t, sqCs_t, den_thr).cpu().numpy()[:, block.neg]
                D2b = D2b_t.cpu().numpy()
                del D2b_t
                for t, i in enumerate(bidx):
                    try:
                        val, eta = _solve_point(int(i), X_test[i], D2b[t], Lb[t], block, pb)
                    except ConvergenceError as exc:
                        ans.record(i, np.nan, None, exc)
                        continue
                    if eta is not None and basis is not None:
                        eta = basis @ eta
                    ans.record(i, val, eta)
    _warn_failed(ans.failed, f": {len(ans.failed)} test point(s) did not converge within max_iter={max_iter}")
    return ans.norms, ans.deltas


# --------------------------------------------------------------------------- reference
def _reference_cvxpy(X_train, y_train, X_test, y_test, M, bounds, strict, progress):
    """The slow, independent reference: the QP of *every* negative solved with cvxpy
    (Clarabel, :func:`~._qp.clarabel_solve`), and the minimum taken."""
    import cvxpy as cp

    n_test, D = X_test.shape
    ans = _Answers(n_test, D, strict, progress)
    if n_test == 0:
        return ans.norms, ans.deltas
    knn = MahalanobisKNN(M, n_neighbors=1, device="cpu").fit(X_train, y_train)
    correct = knn.predict(X_test) == y_test
    ans.skip(int((~correct).sum()))
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
            ok = nr > 1e-12 * float(nr.max())  # relative: invariant to rescaling M
            A_par.value = np.where(ok[:, None], A / np.where(ok, nr, 1.0)[:, None], 0.0)
            b_par.value = np.where(ok, b / np.where(ok, nr, 1.0), 1.0)
            status, err = clarabel_solve(prob, cp)
            sol = d
            if status not in ("optimal", "infeasible"):
                # the parametric (DPP) form occasionally stalls; a freshly built problem
                # with the numbers inlined is canonicalised differently and usually solves
                sol = cp.Variable(D)
                cons = [A_par.value @ sol <= b_par.value]
                if bounds is not None:
                    cons += [sol >= lo_par.value, sol <= hi_par.value]
                fresh = cp.Problem(cp.Minimize(cp.sum_squares(sol)), cons)
                status, err = clarabel_solve(fresh, cp)
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
            ans.record(i, np.nan, None, ConvergenceError(f"test point {int(i)}: {bad}"))
        else:
            ans.record(i, best, best_d)
    _warn_failed(ans.failed, f"(solver='cvxpy'): {len(ans.failed)} test point(s) failed")
    return ans.norms, ans.deltas


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
    X_train, y_train, X_test, y_test, _ = check_data(X_train, y_train, X_test, y_test, None)
    check_n_neighbors(1, y_train)  # at least two classes
    norms = np.asarray(norms, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    if norms.shape != (len(X_test),) or deltas.shape != X_test.shape:
        raise ValueError(
            f"norms must have shape {(len(X_test),)} and deltas {X_test.shape}, got "
            f"{norms.shape} and {deltas.shape}"
        )
    bounds = check_box(box, X_test)
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
            ok[i] = d_other <= d_same * (1 + 1e-9) + 1e-12 * float(dist[r].max())  # relative: scale-free
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
            sc = box_slack(z)
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
