"""The white-box region attack on Mahalanobis K-NN (``ARML_NOTES.md`` section 7).

:class:`RegionAttack`: the settings and the method; :class:`_RegionSolver`: the region QPs
of one problem and the best-first search over the regions of one point; :func:`_region_run`:
every point (K = 1 through :mod:`..exact`); :func:`_exhaustive_k1`: K = 1 by brute force.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from ..._validation import check_choice, check_integer, check_number
from .._qp import (ABANDONED, INFEASIBLE, N_INIT, NOT_CONVERGED, SOLVED, ConvergenceError, clarabel_solve,
                   solve_working_set)
from ..exact import SOLVERS, minimal_perturbations
from .base import DIST_ELEMENTS, _Attack, _Problem

_ROW_REL = 1e-4  # QP row norms below this (relative) are recomputed without cancellation
_ZERO_ROW = 1e-12  # rows with ||M (q - j)|| below this (relative) are ties for ever: dropped
_KEEP_SOLUTIONS = 4  # region solutions kept per point (fallbacks for the final check)
_CROSS_STEPS = 10  # halvings of the segment x -> t when looking for a crossing
_ACTIVE_REL = 1e-7  # a row within this (relative) distance of its boundary is active
_MAX_SWAPS = 16  # neighbouring regions explored per solution
_PROBES = (0.5, 0.2, 0.05, 0.01)  # x + (1 - g) delta probed after a solution
_STAT = {SOLVED: "qp_solved", INFEASIBLE: "qp_infeasible", ABANDONED: "qp_abandoned",
         NOT_CONVERGED: "qp_not_converged"}


@dataclass(frozen=True)
class RegionAttack(_Attack):
    """White-box region attack on Mahalanobis K-NN: exact convex QPs over vote regions.

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
    region is a least-distance QP, solved exactly (:meth:`_RegionSolver.solve`) in float64
    on the CPU.  Rows that no ``delta`` shorter than the best norm found so far can violate
    are dropped first (:meth:`_RegionSolver.rows`); a region whose single-row lower bound
    or growing relaxation value reaches the best norm is abandoned.  Every row is tightened
    by ``margin`` (times the data scale), so ties cannot undo the flip.

    Which regions: a best-first search (:meth:`_RegionSolver.point`) from the starting
    regions of :meth:`_RegionSolver.candidates`; a heuristic: the norm is a verified upper
    bound on ``eps*``, not ``eps*`` itself.  For K = 1 the exact ``delta*`` of
    :func:`~arml_core.robustness.exact.minimal_perturbations` (on the decision boundary) is
    made strictly adversarial with the margin (:meth:`_RegionSolver.polish`; the norm stays
    within about the margin of ``eps*``).

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
        check_integer("n_candidates", self.n_candidates, 0)
        check_integer("n_refine", self.n_refine, 0)
        check_integer("n_targets", self.n_targets, 1, allow_none=True)
        check_integer("max_qp", self.max_qp, 1)
        check_number("explore", self.explore, allow_zero=True)
        check_number("margin", self.margin, allow_zero=True)
        check_number("tol", self.tol)
        check_integer("max_iter", self.max_iter, 1)
        check_choice("solver", self.solver, SOLVERS)

    def _run(self, prob, idx, progress):
        return _region_run(self, prob, idx, progress)


class _RegionSolver:
    """Per-problem arrays of the region QPs (CPU, float64) and the search over regions.

    A candidate region (see :class:`RegionAttack`) is ``(c, J, S, P)``: target class ``c``,
    its points ``J`` in the K-set ``S``, and the points ``P`` of ``S`` of neither class
    ``c`` nor ``y`` (plurality regions only; empty otherwise)."""

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
        self.y = y = prob.y_enc
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
        is ``y``): :meth:`around` for a strict majority of its class ``c``, else the
        plurality region of ``S`` = the K nearest points."""
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
        better than ``best`` could violate, and the single-row lower bound over them (valid
        whatever the rows left out: ``>= best`` discards the candidate).  Rows with
        ``M (q - s) = 0`` are ties for ever and dropped (the final check catches them)."""
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
        """Smallest ``||delta||`` in a candidate region, ``(value, delta)``, by the working set
        of :func:`~.._qp.solve_working_set`; ``(inf, None)`` once it is known to be ``>= best``."""
        rs, rq, inv, hn, lb = self.rows(cand, y, d, best)
        self.stats["candidates"] += 1
        if lb >= best:
            self.stats["pruned"] += 1
            return math.inf, None
        if self.atk.solver == "cvxpy":
            return self._solve_cvxpy(x, rs, rq, inv, hn, best)
        nr = len(rs)
        if nr == 0:  # nothing can be violated: cannot happen for a correctly classified x
            return 0.0, np.zeros(len(x))
        box = self.prob.box
        dim = self.C.shape[1]
        if box is not None:  # the finite box rows: bsign * eta[bcol] <= bh
            up, dn = box[1] - x, x - box[0]
            bidx = np.concatenate([np.flatnonzero(np.isfinite(up)), np.flatnonzero(np.isfinite(dn)) + dim])
            bh = np.concatenate([up, dn])[bidx]
            bsign = np.where(bidx < dim, 1.0, -1.0)
            bcol = bidx % dim
        else:
            bidx = np.zeros(0, dtype=np.int64)
        last = {}

        def row(r):
            if r < nr:
                return (self.C[rq[r]] - self.C[rs[r]]) * inv[r], hn[r]
            e = np.zeros(dim)
            e[bcol[r - nr]] = bsign[r - nr]
            return e, bh[r - nr]

        def violations(eta):  # distance outside each half-space
            s = self.C @ eta
            last["rows"] = v_rows = (s[rq] - s[rs]) * inv - hn
            return np.concatenate([v_rows, bsign * eta[bcol] - bh]) if len(bidx) else v_rows.copy()

        n0 = min(N_INIT, nr)
        initial = np.argpartition(hn, n0 - 1)[:n0] if n0 < nr else np.arange(nr)
        try:
            status, val, eta = solve_working_set(row, violations, initial, nr + len(bidx), best=best,
                                                 tol=self.atk.tol, max_iter=self.atk.max_iter)
        except ConvergenceError:
            status = NOT_CONVERGED
        self.stats[_STAT[status]] += 1
        if status != SOLVED:
            return math.inf, None
        self._set_active(rs, rq, last["rows"], val)
        return val, (self.V @ eta if self.V is not None else eta)

    def _solve_cvxpy(self, x, rs, rq, inv, hn, best):
        """:meth:`solve` with cvxpy/Clarabel on all rows (the slow reference)."""
        import cvxpy as cp

        box = self.prob.box
        dim = self.C.shape[1]
        eta = cp.Variable(dim)
        cons = [((self.C[rq] - self.C[rs]) * inv[:, None]) @ eta <= hn] if len(rs) else []
        if box is not None:
            far = 1e6 * (1.0 + float(np.abs(self.prob.X_train).max()))
            cons += [eta <= np.minimum(box[1] - x, far), eta >= np.maximum(box[0] - x, -far)]
        problem = cp.Problem(cp.Minimize(cp.sum_squares(eta)), cons)
        status, _ = clarabel_solve(problem, cp)
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
        _, dl = self.solve(x, self.single(other[np.argmin(dz[other])]), y, self.prob.dists(x[None, :])[0],
                           math.inf)
        return dl

    def single(self, n):
        """The 1-NN region of training point ``n``: ``J = S = {n}``."""
        return (int(self.y[n]), np.array([n]), np.array([n]), np.zeros(0, np.int64))


def _region_run(atk: RegionAttack, prob: _Problem, idx, progress, *, exhaustive_k1=False):
    """:meth:`RegionAttack._run`: candidates for the points ``idx`` and the QP counters."""
    solver = _RegionSolver(prob, atk)
    cands = [[] for _ in idx]
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
            search = (lambda x, y, d: _exhaustive_k1(solver, x, y, d)) if exhaustive_k1 else solver.point
            step = max(1, DIST_ELEMENTS // max(1, len(prob.X_train)))
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                Dm = prob.dists(prob.X_test[chunk])
                for r, i in enumerate(chunk):
                    cands[s + r] = search(prob.X_test[i], int(prob.yt_enc[i]), Dm[r])
                    if progress is not None:
                        progress(s + r + 1, len(idx))
    return prob.clip_to_box(cands), dict(solver.stats)


def _exhaustive_k1(solver: _RegionSolver, x, y, d):
    """K = 1 through the generic region QP: ``J = S = {n}`` for every other-class point
    ``n``, visited in increasing single-row bound (exact up to the margin; for tests)."""
    negs = np.flatnonzero(solver.y != y)
    cands = [solver.single(n) for n in negs]
    lbs = [solver.quick_lb(c, y, d) for c in cands]
    best, sol = math.inf, None
    for r in np.argsort(lbs, kind="stable"):
        if lbs[r] >= best:
            break
        val, dl = solver.solve(x, cands[r], y, d, best)
        if dl is not None and val < best:
            best, sol = val, dl
    return [] if sol is None else [x + sol]
