"""Exact minimal l2 adversarial perturbation of Mahalanobis K-NN for K > 1, on small data
(``ARML_NOTES.md`` sections 2-5 and 7).

:func:`minimal_perturbations_knn`, reached as ``minimal_perturbations(..., n_neighbors=K)``,
searches the cells of the order-K Voronoi diagram under ``M`` best first: one least-distance
QP (:func:`._qp.solve_working_set`) per visited cell, cells visited in order of a lower
bound made of triplet margins (section 3), ARML Theorem 1 (:func:`.certify.certified_radii`)
as a global floor. It proves its answer, or returns the interval it has proven when the work
limit is hit (:class:`ExactKNNResult`, never a silent approximation).
:func:`verify_knn_perturbations` checks answers against ``MahalanobisKNN(M, K)`` itself.
"""
from __future__ import annotations

import heapq
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from .._validation import PointProgress, box_slack, check_box, check_choice, check_data, check_integer, check_number
from ..knn import MahalanobisKNN, check_n_neighbors
from ..metric import components_from_metric, triplet_margin
from ._qp import INFEASIBLE, N_INIT, NOT_CONVERGED, SOLVED, ConvergenceError, solve_working_set
from .certify import certified_radii

__all__ = ["ExactKNNResult", "minimal_perturbations_knn", "verify_knn_perturbations"]

MAX_TRAIN = 5000  # the search holds the (N x N) pair norms ||M (a - b)||
_MAX_STORED = 2**22  # queued swaps (priority, member, outsider) held per point at most
_ZERO_ROW = 1e-12  # ||M (q - s)|| below this (relative) is a tie for ever: the row is dropped
_SEED_STEPS = 12  # halvings of the segment x -> t when seeding the upper bound
_TIGHTEN_TRIES = 3  # strict solves, the margin divided by 10 after each failure
_EXPAND, _NEXT = 0, 1  # heap entry kinds: a vote-y cell to expand, a parent's next neighbour


@dataclass
class ExactKNNResult:
    """What ``minimal_perturbations(..., n_neighbors=K)`` returns for K > 1; unpacks as
    ``norms, deltas = result`` like the K = 1 answer.

    * ``norms`` (n_test,): ``eps*`` where it is proven, **NaN elsewhere**; 0 for points the
      K-NN misclassifies; ``inf`` when no adversarial point exists (in the box).
    * ``deltas`` (n_test, D): a perturbation that flips ``MahalanobisKNN(M, K)`` with a strict
      K-nearest set, of norm ``>= upper`` and within about the margin of it; for an unproven
      point the witness of ``upper``. Zero rows where misclassified, NaN where none was found.
    * ``lower``, ``upper``: proven bounds ``lower <= eps* <= upper``, equal where proven
      (``upper = inf``: the search stopped before it found an adversarial cell).
    * ``proven``: the search finished, ``norms`` is exact (up to the QP tolerance).
    * ``certified``: ARML Theorem 1, the global lower bound; ``n_qp``: QPs solved per point
      (what ``max_qp`` counts); ``n_neighbors``: K; ``time_s``: seconds of the call.
    * ``info``: ``cells_expanded``, ``qp_infeasible``, ``qp_abandoned``, ``limit_hit``
      (point -> 'max_qp' | 'max_seconds' | 'memory' | 'not converged'), ``not_strict``
      (points whose delta is on the boundary: the cell is thinner than the margin) and
      ``max_excess`` (the largest ``||delta|| - upper``).
    """

    norms: np.ndarray
    deltas: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    proven: np.ndarray
    certified: np.ndarray
    n_qp: np.ndarray
    n_neighbors: int
    time_s: float
    info: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.norms, self.deltas))


def minimal_perturbations_knn(
    X_train, y_train, X_test, y_test, M=None, *, n_neighbors: int, box=None, max_qp: int = 10000,
    max_seconds: float | None = None, margin: float = 1e-8, n_seeds: int = 4, solver: str = "fast",
    device: str = "auto", tol: float = 1e-9, max_iter: int = 1000, strict: bool = True,
    progress: PointProgress | None = None,
) -> ExactKNNResult:
    """Exact minimal l2 adversarial perturbation of Mahalanobis K-NN (odd K > 1), or a proven
    interval where the work limit stops the search.

    **The problem.** For a K-set ``S`` of training points, its cell
    ``cell(S) = {z : d_M(z, s) <= d_M(z, q) for all s in S, q not in S}`` is a polyhedron
    (each row is linear in ``z``, as in section 5); the cells cover the space, and the K-NN
    votes ``vote(S)`` (ties to the smallest class index, as :class:`~arml_core.knn.MahalanobisKNN`)
    everywhere inside ``cell(S)``. So ``eps*(x) = min dist(x, cell(S))`` over the K-sets whose
    vote is not ``y``; ``dist(x, cell(S))`` is a least-distance QP with ``K (N - K)`` rows
    (:func:`~._qp.solve_working_set`; rows with ``M (q - s) = 0`` are ties for ever and
    dropped). Ties count as adversarial (closed cells), as in the K = 1 solver; for data in
    general position every non-empty cell has an interior, so the minimum is the
    classifier's infimum.

    **Priorities** bound ``g(z) = ||z - x|| + dist(z, adversarial set)`` from below, over a
    cell or over the face through which a cell is entered; a nearest adversarial point
    ``a*`` has ``g = eps*`` all along the segment ``[x, a*]``. Ingredients: Theorem 1 at any
    point ``z`` (``cert(z)``, :meth:`_Cells.theorem1`) bounds ``dist(z, adversarial set)``,
    and is 1-Lipschitz; for ``z`` in a cell with QP value ``val`` and optimum ``z*``,
    ``||z - x||^2 >= val^2 + ||z - z*||^2`` (``z*`` projects ``x`` on a polyhedron holding the
    cell, the QP's working rows). Together, ``g(z) >= sqrt(val^2 + max(u, cert(z*))^2)`` for
    any ``u <= ||z - z*||``: with ``u = 0`` the priority of an evaluated cell when it is
    expanded (first its distance ``val``). A swap ``S' = S - {s} + {q}`` out of it enters
    through the face ``F = cell(S) & {d_M(z, s) = d_M(z, q)}``; its points satisfy every row
    ``S'`` adds (kept members at least as close as ``s``, ``q`` at least as close as every
    outsider), each a half-space whose distance from a point is a triplet margin
    ``[d_M(., a) - d_M(., b)]_+ / (2 ||M (a - b)||)`` (:func:`~arml_core.metric.triplet_margin`).
    From ``x`` they bound ``||z - x||``; from ``z*``, with the tie hyperplane (two rows at a
    time, closed form), they give ``u``. The swap's priority is the largest of these
    (:func:`_edge_bounds`: ``O(K N)`` numpy work per expanded cell, plus ``O(N)`` per ``q``
    still below ``best``; the pair norms ``||M (a - b)||`` are computed once).

    **The search (best first).** Start with the cell of ``x``'s K nearest (of the box point
    nearest to ``x`` with ``box``), evaluated exactly; seed the best adversarial value
    ``best`` with the cells met where the segments from ``x`` to the ``n_seeds`` nearest
    training points that K-NN labels ``!= y`` turn adversarial. Repeatedly take the entry
    of smallest priority: an evaluated vote-``y`` cell is re-queued once with its Theorem 1
    priority, then *expanded*: its swaps with priority ``< best`` are queued, lazily, in
    that order; a queued swap whose cell was not seen before is evaluated exactly (QP
    abandoned at ``best``; infeasible cells are dropped): adversarial, it may lower
    ``best``; otherwise it is queued for expansion. Stop when the smallest priority left
    is ``>= best`` or ``best <=`` Theorem 1 at ``x``: ``eps* = best``, proven.

    **Why it is exact.** Every point of ``[x, a*]`` is within ``eps*`` of ``x`` and has
    ``g = eps*``; the segment is covered by finitely many closed convex cells, each meeting
    it in an interval. Walking along it, consecutive cells share a point ``z``; the cells
    containing one point ``z`` are the K-sets made of the points strictly nearer than the
    K-th distance at ``z`` plus some of those at exactly that distance, so any two of them
    are joined by single swaps through cells that all contain ``z``. Hence a chain of cells
    ``C_0 (x's) -> ... -> C_m (a*'s)``, each a single swap from the last through a face
    holding a point of the segment: every chain cell and chain swap has priority
    ``<= eps*``. Invariant: until the search stops, the first chain cell ``C_j`` not yet
    expanded is queued -- directly (``j = 0``, or evaluated) or through the swap from the
    expanded ``C_{j-1}`` -- with priority ``<= eps*``, unless a bound or a relaxation
    reaching ``best`` left it out, and then ``best <= eps*`` already. A cell with vote
    ``!= y`` is never expanded but sets ``best``. So the search cannot stop with
    ``best > eps*``, and ``best``, an adversarial cell's distance, is ``>= eps*``. With
    ``box``, cells are intersected with the box and the segment runs from the box point
    nearest ``x`` to ``a*`` (within ``eps*`` of ``x``: both ends are; ``g <= eps*`` on it).

    **The work limit.** At most ``max_qp`` QPs (seeds included) and ``max_seconds`` per point,
    and ``2**22`` queued swaps. When one is hit the invariant still gives
    ``eps* >= min(smallest priority left, best)``: the point gets
    ``lower = max(Theorem 1, that)``, ``upper = best``, ``proven = False``, a NaN norm and
    one ``ConvergenceWarning`` counts such points. The search is exponential in the worst
    case (the number of cells within ``eps*`` grows fast with the dimension and K).

    **The perturbation.** The winning cell's QP is solved again with every row tightened by
    ``tau = max(margin * scale, 10 * tol * max(1, eps*))`` (``scale``: root-mean-square
    distance of the training points to their mean; box rows are not tightened): at
    ``x + delta`` every member of the cell is closer than every non-member by at least
    about ``tau - tol``, so the flip does not depend on how distance ties are broken.
    ``||delta|| >= eps*``; it exceeds ``eps*`` by at most ``H tau`` where ``H`` is the
    Hoffman constant of the cell's rows (1 when one row is active; ``info['max_excess']``
    reports the largest excess). The reported radius is the exact QP value.

    Parameters are those of :func:`~.exact.minimal_perturbations` (``box``, ``device``:
    where Theorem 1 and the classifier run; the search is numpy float64 on the CPU, ``tol``,
    ``max_iter``, ``progress``) plus ``n_neighbors`` (odd K > 1), ``max_qp``, ``max_seconds``
    (None: no time limit), ``margin``, ``n_seeds`` and ``strict`` (True: a QP that does not
    converge raises :class:`~._qp.ConvergenceError`; False: the point is left unproven with
    its interval). ``solver`` must be 'fast'. Holds ``N x N`` float64 arrays (N training
    points, at most ``MAX_TRAIN``).
    """
    start = time.perf_counter()
    check_choice("solver", solver, ("fast",))
    check_integer("max_qp", max_qp, 1)
    if max_seconds is not None:
        check_number("max_seconds", max_seconds)
    check_number("margin", margin)
    check_integer("n_seeds", n_seeds, 0)
    check_number("tol", tol)
    check_integer("max_iter", max_iter, 1)
    X_train, y_train, X_test, y_test, M = check_data(X_train, y_train, X_test, y_test, M)
    K = check_n_neighbors(n_neighbors, y_train)
    if not np.any(M):  # as exact._metric_factors: no cell QP has a row
        raise ValueError("M is the zero matrix: every point is at distance 0 from every other")
    if K == 1:
        raise ValueError("max_qp, max_seconds, margin and n_seeds apply to n_neighbors > 1 only; K = 1 is the "
                         "screened 1-NN solver of exact.minimal_perturbations")
    if len(X_train) > MAX_TRAIN:
        raise ValueError(f"the exact K-NN search is for small data: {len(X_train)} training points, at most "
                         f"{MAX_TRAIN} (it holds N x N arrays); use certified_radii and attack for bounds")
    bounds = check_box(box, X_test)
    n_test, D = X_test.shape
    knn = MahalanobisKNN(M, n_neighbors=K, device=device).fit(X_train, y_train)
    pos = {c: i for i, c in enumerate(knn.classes_.tolist())}
    yt = np.array([pos.get(c, -1) for c in y_test.tolist()], dtype=np.int64)
    out = dict(norms=np.zeros(n_test), deltas=np.zeros((n_test, D)), lower=np.zeros(n_test),
               upper=np.zeros(n_test), n_qp=np.zeros(n_test, dtype=np.int64))
    proven = np.ones(n_test, dtype=bool)
    info = dict(cells_expanded=0, qp_infeasible=0, qp_abandoned=0, limit_hit={}, not_strict=[], max_excess=0.0)
    cert = np.zeros(n_test)
    if n_test:
        cert = certified_radii(X_train, y_train, X_test, y_test, M, K, device=device)
        correct = (yt >= 0) & (knn.predict_encoded(X_test) == yt)
        todo = np.flatnonzero(correct)
        done = n_test - len(todo)
        if progress is not None and done:
            progress(done, n_test)
        if len(todo):
            cells = _Cells(X_train, knn, M, K, bounds, tol, max_iter, margin, n_seeds)
            starts = knn.kneighbors(X_test[todo] if bounds is None else np.clip(X_test[todo], *bounds))[1]
            limits = (int(max_qp), max_seconds, bool(strict))
            with threadpool_limits(limits=1, user_api="blas"):
                for t, i in enumerate(todo):
                    res = _search(cells, X_test[i], int(yt[i]), starts[t], float(cert[i]), limits, info, i)
                    _store(out, proven, info, i, cells, X_test[i], res)
                    done += 1
                    if progress is not None:
                        progress(done, n_test)
    norms = np.where(proven, out["upper"], np.nan)
    if not proven.all():
        bad = np.flatnonzero(~proven)
        warnings.warn(
            f"minimal_perturbations(n_neighbors={K}): {len(bad)} of {n_test} test point(s) hit the work limit "
            f"(max_qp={max_qp}, max_seconds={max_seconds}; indices {bad[:10].tolist()}"
            f"{' ...' if len(bad) > 10 else ''}): their radius is NOT proven -- norms is NaN there and "
            "only the interval [result.lower, result.upper] holds",
            ConvergenceWarning, stacklevel=3,
        )
    return ExactKNNResult(norms=norms, deltas=out["deltas"], lower=out["lower"], upper=out["upper"], proven=proven,
                          certified=cert, n_qp=out["n_qp"], n_neighbors=K, time_s=time.perf_counter() - start,
                          info=info)


class _Cells:
    """Per-problem arrays of the cell QPs (CPU, numpy float64): coordinates ``Z = X G^T``
    (``d_M(a, b) = ||Z_a - Z_b||^2``), QP row vectors ``C`` (rows ``M x`` in the eigenbasis
    of ``M``, or in input coordinates with a box), ``inv[a, b] = 1 / ||M (a - b)||`` (0 for
    the ties for ever), the classifier's labels of the training points (for the seeds) and
    the settings."""

    def __init__(self, X_train, knn, M, K, bounds, tol, max_iter, margin, n_seeds):
        G = knn.components_
        w = (G * G).sum(1)
        self.G, self.K, self.bounds, self.tol, self.max_iter, self.n_seeds = G, K, bounds, tol, max_iter, n_seeds
        self.y = knn.y_train_
        self.n_classes = len(knn.classes_)
        self.Z = X_train @ G.T
        self.sw = np.sqrt(w)  # G V = diag(sw): a step eta in the eigenbasis moves Z by sw * eta
        if bounds is None:  # eta in the eigenbasis V of M (delta = V eta): rank(M) variables
            self.C = self.Z * self.sw[None, :]
            self.V = (G / np.sqrt(np.where(w > 0, w, 1.0))[:, None]).T
        else:  # the box needs input coordinates
            self.C, self.V = X_train @ M, None
        nrm = cdist(self.C, self.C)  # from the differences: no cancellation for close points
        keep = nrm > _ZERO_ROW * max(float(nrm.max()), 1e-300)
        self.inv = np.divide(1.0, nrm, out=np.zeros_like(nrm), where=keep)
        cen = X_train - X_train.mean(0)
        self.tau = margin * max(float(np.sqrt((cen * cen).sum(1).mean())), 1e-300)
        self.pred_train = knn.predict_encoded(X_train) if n_seeds else None
        self._pairs = {}  # class -> (its points, the others, 1 / (2 ||M (p - n)||) between them)

    def theorem1(self, dd, y) -> float:
        """ARML Theorem 1 at a point with squared distances ``dd`` to the training points
        (label ``y``): ``kth_min_n kth_max_p [eps_t(p, n, .)]_+``, a lower bound on its
        distance to every point that K-NN labels ``!= y``, whatever its own label."""
        if y not in self._pairs:
            pos, neg = np.flatnonzero(self.y == y), np.flatnonzero(self.y != y)
            self._pairs[y] = (pos, neg, 0.5 * self.inv[np.ix_(neg, pos)])
        pos, neg, half = self._pairs[y]
        k = (self.K + 1) // 2
        eps = np.maximum(triplet_margin(dd[neg][:, None], dd[pos][None, :], inv_denominator=half), 0.0)
        inner = -np.partition(-eps, k - 1, axis=1)[:, k - 1]  # k-th largest over p, per n
        return float(np.partition(inner, k - 1)[k - 1])

    def vote(self, S) -> int:
        return int(np.bincount(self.y[list(S)], minlength=self.n_classes).argmax())  # ties: smallest index

    def qp(self, S, d, box_rhs, best, tau=0.0):
        """``dist(x, cell(S))`` (rows tightened by ``tau``): ``(status, value, eta)`` of
        :func:`~._qp.solve_working_set`, abandoned at ``best``."""
        S = np.asarray(S)
        inS = np.zeros(len(self.Z), dtype=bool)
        inS[S] = True
        comp = np.flatnonzero(~inS)
        nq = len(comp)
        inv = self.inv[np.ix_(S, comp)]
        with np.errstate(invalid="ignore"):
            h = np.where(inv > 0, 0.5 * (d[comp][None, :] - d[S][:, None]) * inv - tau, np.inf).ravel()
        dim = self.C.shape[1]
        if box_rhs is not None:  # finite box rows: sign * eta[col] <= rhs
            rhs = np.concatenate(box_rhs)
            bidx = np.flatnonzero(np.isfinite(rhs))
            bsign, bcol, bh = np.where(bidx < dim, 1.0, -1.0), bidx % dim, rhs[bidx]
        else:
            bidx = np.zeros(0, dtype=np.int64)
        nr = len(h)

        def row(r):
            if r < nr:
                a, b = divmod(r, nq)
                return (self.C[comp[b]] - self.C[S[a]]) * inv[a, b], h[r]
            e = np.zeros(dim)
            e[bcol[r - nr]] = bsign[r - nr]
            return e, bh[r - nr]

        def violations(eta):
            cs = self.C @ eta
            v = ((cs[comp][None, :] - cs[S][:, None]) * inv).ravel() - h
            return np.concatenate([v, bsign * eta[bcol] - bh]) if len(bidx) else v

        finite = np.flatnonzero(np.isfinite(h))
        n0 = min(N_INIT, len(finite))
        initial = finite[np.argpartition(h[finite], n0 - 1)[:n0]] if n0 else finite
        return solve_working_set(row, violations, initial, nr + len(bidx), best=best, tol=self.tol,
                                 max_iter=self.max_iter)

    def seeds(self, zx, d, y):
        """K-sets with vote ``!= y`` where the segments from ``x`` to its ``n_seeds`` nearest
        training points that the K-NN labels ``!= y`` turn adversarial (bisection)."""
        pool = np.flatnonzero(self.pred_train != y)
        ts = pool[np.argsort(d[pool], kind="stable")[: self.n_seeds]]
        if len(ts) == 0:
            return []
        U = self.Z[ts] - zx
        lo, hi = np.zeros(len(ts)), np.ones(len(ts))
        for _ in range(_SEED_STEPS):
            mid = 0.5 * (lo + hi)
            sets = self._nearest(zx + mid[:, None] * U)
            adv = np.array([self.vote(S) != y for S in sets], dtype=bool)
            hi, lo = np.where(adv, mid, hi), np.where(adv, lo, mid)
        return [S for S in self._nearest(zx + hi[:, None] * U) if self.vote(S) != y]

    def _nearest(self, Zq):
        dq = (self.Z * self.Z).sum(1)[None, :] - 2.0 * (Zq @ self.Z.T)
        return [tuple(sorted(r.tolist())) for r in np.argpartition(dq, self.K - 1, axis=1)[:, : self.K]]


@dataclass
class _Found:
    """One point's outcome: bounds, the winning cell and its QP solution, the QPs solved and
    why the search stopped early (None: proven)."""

    lower: float
    upper: float
    cell: tuple | None
    eta: np.ndarray | None
    n_qp: int
    limit: str | None
    d: np.ndarray
    box_rhs: tuple | None


def _edge_bounds(cells: _Cells, S, comp, d, dstar, val, floor, best):
    """Priorities (K, N - K) of the swaps ``S[a] -> comp[b]`` out of an expanded cell ``S``
    (value ``val``, optimum ``z*`` at distances ``dstar``, Theorem 1 there ``floor``): lower
    bounds on ``g`` over the face ``F`` (see "Priorities" in :func:`minimal_perturbations_knn`).
    The rows ``S'`` adds: kept members against ``s`` (the most violated at ``z*`` paired with
    the tie hyperplane by :func:`_two_rows`), then ``q`` against every outsider (``O(N)``
    per ``q``, only where the rest is ``< best``)."""
    half, C = 0.5 * cells.inv, cells.C
    hSQ, hSS = half[np.ix_(S, comp)], half[np.ix_(S, S)]

    def margins(dd, rows, cols, h):  # [dd_rows - dd_cols]_+ / (2 ||M (row - col)||)
        return np.maximum(triplet_margin(dd[rows][:, None], dd[cols][None, :], inv_denominator=h), 0.0)

    alpha = triplet_margin(dstar[comp][None, :], dstar[S][:, None], inv_denominator=hSQ)  # z* to the tie
    Fz = margins(dstar, S, S, hSS)  # [a', a]: kept member S[a'] against s = S[a], from z*
    j = Fz.argmax(0)
    nf = (C[S] - C[S[j]]) * (2 * hSS[j, np.arange(len(S))])[:, None]  # its unit normal, per s
    c = 2 * hSQ * (C[comp] @ nf.T - (C[S] * nf).sum(1)[None, :]).T
    m = np.maximum(_two_rows(alpha, -Fz[j, np.arange(len(S))][:, None], c), floor)
    far_x = margins(d, S, S, hSS).max(0)
    pri = np.maximum(np.maximum(far_x[:, None], margins(d, comp, S, hSQ.T).T), np.hypot(val, m))
    qs = np.flatnonzero((pri < best).any(0))
    if len(qs):
        cq = comp[qs]
        hQ = half[np.ix_(cq, comp)]
        Qz = margins(dstar, cq, comp, hQ)  # [b, q']: q = comp[qs][b] against outsider q', from z*
        j = Qz.argmax(1)
        r = np.arange(len(qs))
        nq = (C[comp[j]] - C[cq]) * (2 * hQ[r, j])[:, None]
        c = 2 * hSQ[:, qs] * ((C[cq] * nq).sum(1)[None, :] - C[S] @ nq.T)
        m = np.maximum(m[:, qs], _two_rows(alpha[:, qs], -Qz[r, j][None, :], c))
        q_x = margins(d, cq, comp, hQ).max(1)
        pri[:, qs] = np.maximum(pri[:, qs], np.maximum(q_x[None, :], np.hypot(val, m)))
    return pri


def _two_rows(alpha, beta, c):
    """Distance from 0 to ``{a.w = alpha} & {b.w <= beta}`` for unit ``a``, ``b`` with
    ``a.b = c`` (elementwise); the larger one-row distance where the rows are nearly parallel."""
    one = np.maximum(np.abs(alpha), np.maximum(-beta, 0.0))
    den = 1.0 - c * c
    with np.errstate(divide="ignore", invalid="ignore"):
        both = np.sqrt(np.maximum(alpha * alpha - 2 * c * alpha * beta + beta * beta, 0.0) / den)
    return np.where((alpha * c <= beta) | (den < 1e-9), one, np.maximum(both, one))


def _search(cells: _Cells, x, y, start, cert, limits, info, i) -> _Found:
    """The best-first search of :func:`minimal_perturbations_knn` for one correctly
    classified point ``x`` (label ``y``, start cell ``start``, Theorem 1 bound ``cert``)."""
    max_qp, max_seconds, strict = limits
    t0 = time.perf_counter()
    zx = x @ cells.G.T
    d = ((cells.Z - zx) ** 2).sum(1)
    box_rhs = None if cells.bounds is None else (cells.bounds[1] - x, x - cells.bounds[0])
    N = len(d)
    heap, seen = [], set()
    best, best_cell, best_eta = math.inf, None, None
    n_qp, count, stored = 0, 0, 0
    limit, pending = None, 0.0  # pending: the priority of the entry being evaluated

    def evaluate(S, bound):
        """QP of cell ``S``; returns its value (inf: empty or ``>= bound``) and eta."""
        nonlocal n_qp
        n_qp += 1
        try:
            status, val, eta = cells.qp(S, d, box_rhs, bound)
        except ConvergenceError as exc:
            status, val, eta = NOT_CONVERGED, math.inf, str(exc)
        if status == NOT_CONVERGED:
            if strict:
                raise ConvergenceError(f"test point {i}: the QP of cell {S} did not converge "
                                       f"(max_iter={cells.max_iter}){': ' + eta if eta else ''}")
            raise _Stop("not converged")
        if status != SOLVED:
            info["qp_infeasible" if status == INFEASIBLE else "qp_abandoned"] += 1
        return val, eta

    def consider(S, bound):
        nonlocal best, best_cell, best_eta, count
        seen.add(S)
        val, eta = evaluate(S, bound)
        if eta is None:
            return
        if cells.vote(S) != y:
            if val < best:
                best, best_cell, best_eta = val, S, eta
        else:
            heapq.heappush(heap, (val, count, _EXPAND, (S, eta, val, None)))
            count += 1

    try:
        consider(tuple(sorted(int(s) for s in start)), math.inf)
        for S in cells.seeds(zx, d, y) if cells.n_seeds else []:
            if S not in seen and n_qp < max_qp:
                consider(S, best)
        while heap and heap[0][0] < best and best > cert:
            pending = math.inf
            if n_qp >= max_qp:
                raise _Stop("max_qp")
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                raise _Stop("max_seconds")
            prio, _, kind, item = heapq.heappop(heap)
            pending = prio
            if kind == _EXPAND:
                S, eta, val, dstar = item
                if dstar is None:  # first pop: raise the priority by Theorem 1 at z*, then re-queue
                    zs = zx + (cells.sw * eta if cells.V is not None else cells.G @ eta)  # z* in Z coordinates
                    dstar = ((cells.Z - zs) ** 2).sum(1)
                    floor = cells.theorem1(dstar, y)
                    heapq.heappush(heap, (math.hypot(val, floor), count, _EXPAND, (S, eta, val, (dstar, floor))))
                    count += 1
                    continue
                info["cells_expanded"] += 1
                Sa = np.array(S)
                inS = np.zeros(N, dtype=bool)
                inS[Sa] = True
                comp = np.flatnonzero(~inS)
                lb = _edge_bounds(cells, Sa, comp, d, dstar[0], val, dstar[1], best)
                flat = np.flatnonzero(lb.ravel() < best)
                flat = flat[np.argsort(lb.ravel()[flat], kind="stable")]
                if len(flat):
                    gen = [lb.ravel()[flat], Sa, *np.divmod(flat, len(comp)), comp, 0]
                    heapq.heappush(heap, (float(gen[0][0]), count, _NEXT, gen))
                    count += 1
                    stored += len(flat)
                    if stored > _MAX_STORED:
                        raise _Stop("memory")
                continue
            lbs, Sa, a, b, comp, j = item
            item[5] = j + 1
            if j + 1 < len(lbs) and lbs[j + 1] < best:
                heapq.heappush(heap, (float(lbs[j + 1]), count, _NEXT, item))
                count += 1
            S2 = Sa.copy()
            S2[a[j]] = comp[b[j]]
            S2 = tuple(sorted(S2.tolist()))
            if S2 not in seen:
                consider(S2, best)
    except _Stop as stop:
        limit = str(stop)
    if limit is None:
        return _Found(best, best, best_cell, best_eta, n_qp, None, d, box_rhs)
    left = min(heap[0][0] if heap else math.inf, pending)
    return _Found(max(cert, min(left, best)), best, best_cell, best_eta, n_qp, limit, d, box_rhs)


class _Stop(Exception):
    """The work limit was hit (the message says which)."""


def _strict_delta(cells: _Cells, found: _Found, x):
    """The winning cell's QP with every row tightened (see :func:`minimal_perturbations_knn`):
    ``(delta, strict)``; the boundary solution itself when the cell is thinner than the margin."""
    tau = max(cells.tau, 10.0 * cells.tol * max(1.0, found.upper))
    eta, ok = found.eta, False
    for _ in range(_TIGHTEN_TRIES):
        try:
            status, _, e = cells.qp(found.cell, found.d, found.box_rhs, math.inf, tau)
        except ConvergenceError:
            status = NOT_CONVERGED
        if status == SOLVED:
            eta, ok = e, True
            break
        tau /= 10.0
    delta = eta if cells.V is None else cells.V @ eta
    if cells.bounds is not None:
        delta = np.clip(x + delta, *cells.bounds) - x
    return delta, ok


def _store(out, proven, info, i, cells, x, found: _Found):
    """Write one point's outcome into the result arrays."""
    out["lower"][i], out["upper"][i], out["n_qp"][i] = found.lower, found.upper, found.n_qp
    if found.limit is not None:
        proven[i] = False
        info["limit_hit"][int(i)] = found.limit
    if found.cell is None:
        out["deltas"][i] = np.nan
        return
    delta, ok = _strict_delta(cells, found, x)
    out["deltas"][i] = delta
    if not ok:
        info["not_strict"].append(int(i))
    info["max_excess"] = max(info["max_excess"], float(np.linalg.norm(delta)) - found.upper)


def verify_knn_perturbations(X_train, y_train, X_test, y_test, M, norms, deltas, n_neighbors: int,
                             rtol: float = 1e-6, *, box=None, device: str = "auto") -> np.ndarray:
    """Check K-NN answers against the real classifier ``MahalanobisKNN(M, K)``; per point True when:

    * K-NN misclassifies ``x`` and ``norm == 0``;
    * K-NN classifies ``x`` correctly, ``norm`` is finite, ``delta`` is finite with
      ``norm (1 - rtol) <= ||delta|| <= norm + rtol * max(norm, scale)`` (``scale``: the
      root-mean-square distance of the training points to their mean), ``x + delta`` is
      classified differently *with a strict winner*: the K nearest are determined without
      breaking distance ties (the (K+1)-th distance exceeds the K-th by more than round-off,
      or every point tied at the K-th distance has the same label -- duplicates), and, for
      ``norm > 0``, ``x + (1 - rtol) * norm * delta / ||delta||`` is still classified
      correctly (a point strictly inside the radius, on the ray of ``delta``);
    * ``norm == inf`` (no adversarial point in the box): accepted, it cannot be checked.
    With ``box``, ``x + delta`` must lie in the box. NaN norms (unproven points) fail.
    """
    X_train, y_train, X_test, y_test, _ = check_data(X_train, y_train, X_test, y_test, None)
    K = check_n_neighbors(n_neighbors, y_train)
    norms = np.asarray(norms, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    if norms.shape != (len(X_test),) or deltas.shape != X_test.shape:
        raise ValueError(f"norms must have shape {(len(X_test),)} and deltas {X_test.shape}, got "
                         f"{norms.shape} and {deltas.shape}")
    bounds = check_box(box, X_test)
    knn = MahalanobisKNN(M, n_neighbors=K, device=device).fit(X_train, y_train)
    ok = np.zeros(len(X_test), dtype=bool)
    correct = knn.predict(X_test) == y_test
    ok[~correct] = norms[~correct] == 0
    ok[correct & np.isinf(norms)] = True
    sel = np.flatnonzero(correct & np.isfinite(norms))
    if len(sel) == 0:
        return ok
    cen = X_train - X_train.mean(0)
    scale = float(np.sqrt((cen * cen).sum(1).mean()))
    x, nm, y = X_test[sel], norms[sel], y_test[sel]
    good = np.all(np.isfinite(deltas[sel]), axis=1)
    dl = np.where(good[:, None], deltas[sel], 0.0)
    dn = np.linalg.norm(dl, axis=1)
    good &= (dn >= nm * (1 - rtol)) & (dn <= nm + rtol * np.maximum(nm, scale))
    z = x + dl
    good &= knn.predict(z) != y
    good &= _strict_set(knn, X_train, z, K)
    pos = nm > 0
    inner = x + ((1 - rtol) * nm / np.where(dn > 0, dn, 1.0))[:, None] * dl
    good[pos] &= knn.predict(inner[pos]) == y[pos]
    if bounds is not None:
        sc = box_slack(z)
        good &= np.all((z >= bounds[0] - sc) & (z <= bounds[1] + sc), axis=1)
    ok[sel] = good
    return ok


def _strict_set(knn, X_train, z, K):
    """Per row of ``z``: the labels of its K nearest do not depend on how distance ties are
    broken (a gap above round-off after the K-th distance, or one label among the tied)."""
    dist, idx = knn.kneighbors(z, n_neighbors=len(X_train))
    Gz, Gt = z @ knn.components_.T, X_train @ knn.components_.T
    roundoff = 64 * np.finfo(float).eps * ((Gz * Gz).sum(1) + float((Gt * Gt).sum(1).max()))
    tied = np.abs(dist - dist[:, K - 1 : K]) <= roundoff[:, None]
    lab = knn.y_train_[idx]
    one_label = np.all(np.where(tied, lab == lab[:, K - 1 : K], True), axis=1)
    return ~tied[:, K] | one_label if dist.shape[1] > K else np.ones(len(z), dtype=bool)
