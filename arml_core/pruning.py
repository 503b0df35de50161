"""Adversarial pruning (Yang, Rashtchian, Wang, Chaudhuri, AISTATS 2020): a data-side defence.

:func:`adversarial_pruning` removes a minimal set of training points so that no two kept
points of different labels are closer than ``2 r`` (in the separation it defines for a
Mahalanobis metric ``M``); the K-NN, the certifier, the exact 1-NN solver and the attacks
then run unchanged on the kept points. It composes with any metric, so it sets a data-side
defence beside ARML's metric-side one. The mathematics is in its docstring.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_bipartite_matching

from ._validation import check_choice, check_integer, check_number
from .device import resolve_device
from .knn import pairwise_sq_dists
from .metric import check_metric, components_from_metric

METHODS = ("auto", "exact", "greedy")
_BLOCK_ELEMENTS = 2**23  # pairs screened at once (two float64 blocks of this size)
_SCREEN_SLACK = 1e-6  # relative slack of the GEMM screen; every candidate is then recomputed exactly


@dataclass(frozen=True)
class PruningResult:
    """What :func:`adversarial_pruning` did (``return_result=True``).

    ``kept`` / ``removed``: sorted indices into the training set. ``exact``: the removed
    set is provably minimal. ``solver``: which solvers ran, joined by '+' ('none' when
    nothing conflicts); ``components``: conflict-graph components per solver.
    ``lower_bound``: a lower bound on the minimal number of removals (``len(removed)``
    when exact; otherwise from the greedy's matching or the MILP's dual bound), so
    ``len(removed) / lower_bound`` bounds the distance from the optimum."""

    kept: np.ndarray
    removed: np.ndarray
    radius: float
    n_conflicts: int
    exact: bool
    solver: str
    lower_bound: int
    components: dict = field(default_factory=dict)


def adversarial_pruning(X, y, M, r, *, method: str = "auto", exact_limit: int = 20000,
                        time_limit: float = 30.0, device: str = "auto", return_result: bool = False):
    """Indices (sorted) of the training points kept by adversarial pruning at radius ``r``.

    **The separation.** Perturbations are measured in the Euclidean input norm while the
    classifier ranks training points by ``d_M(a, b) = (a - b)^T M (a - b)`` (ARML_NOTES
    sections 1-2). For two training points ``a``, ``b`` with ``u = a - b`` the pruning uses

        s_M(a, b) = u^T M u / ||M u||_2        (0 when M u = 0),

    twice the Euclidean distance from ``a`` (and from ``b``) to their bisector under ``M``,
    the hyperplane ``{z : d_M(z, a) = d_M(z, b)}`` (normal ``M u``, through the midpoint).
    It is ``2 eps_t(a, b, a)``, the triplet margin of ARML_NOTES section 3 with
    ``x = p = a`` and ``n = b``. For ``M = I`` it is ``||a - b||``, the paper's ``2r``
    separation; for any ``M``, ``s_M(a, b) <= ||a - b||`` (Cauchy-Schwarz) and ``s_M`` does
    not change when ``M`` is scaled (ARML's objective leaves the scale of ``M`` free).

    Two points of different labels *conflict* when ``s_M < 2 r``; the kept points are the
    complement of a minimum vertex cover of this conflict graph (a maximum independent
    set), so every kept pair of different labels has ``s_M >= 2 r``.

    **The guarantee.** Then every kept point ``a``, as a test point with its own label
    against the kept set, has an exact minimal l2 perturbation of Mahalanobis 1-NN of at
    least ``r``, and ARML's K = 1 certificate there is at least ``r``: ``a`` is its own
    nearest neighbour, and ``a + delta`` can only take the label of a kept point ``b`` of
    another class if it lies in the half-space ``{z : d_M(z, b) <= d_M(z, a)}``, whose
    Euclidean distance from ``a`` is ``s_M(a, b) / 2 >= r``; the certificate
    ``min_b max_p eps_t(p, b, a)`` is at least ``min_b eps_t(a, b, a)`` (take ``p = a``).
    No weaker pairwise rule gives this: for the two-point set ``{a, b}`` the exact radius
    at ``a`` is ``s_M(a, b) / 2``. Pruning with the metric's own distance ``sqrt(d_M)``
    (the paper's choice, where attack and classifier share a norm) would certify
    perturbations with ``||G delta|| < r`` instead, and depend on the scale of ``M``. For
    K > 1 separation alone certifies nothing (the vote needs several same-class
    neighbours); K-NN on the pruned set is the paper's heuristic. The decision
    ``s_M < 2 r`` is taken in float64: a pair at exactly ``2 r`` (quantised data) may fall
    on either side by round-off.

    **The solvers** (``method``). Conflict edges join different labels, so with two
    classes the graph is bipartite and a maximum matching (Hopcroft-Karp,
    ``scipy.sparse.csgraph.maximum_bipartite_matching``) gives a minimum vertex cover by
    König's theorem: exact. With more classes the graph is split into connected
    components; each 2-colourable one is solved the same way (exact); the others:

    * ``'auto'`` (default): a MILP (``min sum x s.t. x_i + x_j >= 1`` per conflict, binary
      ``x``; HiGHS through ``scipy.optimize.milp``) for a component of at most
      ``exact_limit`` points, within ``time_limit`` seconds (the paper's data at the grid
      radii take under a second; a component with a million conflicts does not finish in
      a minute); larger components, and a MILP that does not prove optimality in time, get
      the greedy (or the MILP's best cover, if smaller);
    * ``'exact'``: the MILP whatever the size; RuntimeError if it does not finish;
    * ``'greedy'``: the approximation of the authors' code (``approx_ap``: networkx's
      ``min_weighted_vertex_cover``, the local-ratio algorithm of Bar-Yehuda and Even,
      which with unit weights removes both ends of every conflict not yet covered, in
      order: a 2-approximation) on every component, bipartite or not; followed here by a
      repair pass that puts back each removed point none of whose conflicts is kept
      (it only shrinks the removal, so the factor 2 holds).

    ``result.solver`` and ``result.exact`` (``return_result=True``) say which ran.

    ``X``: (n, D) training points; ``y``: their labels (two classes at least); ``M``: the
    (D, D) Mahalanobis matrix, ``None`` for the Euclidean metric; ``r >= 0`` the l2
    radius (``r = 0`` keeps everything). The conflict graph is built in blocks of
    matrix products (memory bounded), each candidate pair recomputed directly.
    """
    X, y_enc, M = _check_inputs(X, y, M)
    r = float(check_number("r", r, allow_zero=True))
    check_choice("method", method, METHODS)
    check_integer("exact_limit", exact_limit, 0)
    check_number("time_limit", time_limit)
    edges = conflict_graph(X, y_enc, M, r, device=device)
    n = len(X)
    cover = np.zeros(n, dtype=bool)
    lower = 0
    runs: dict[str, int] = {}
    exact = True
    if len(edges):
        adj = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
        adj = (adj + adj.T).tocsr()
        for verts, colour in _components(adj):
            sub = adj[verts][:, verts].tocsr()
            if method == "greedy":
                solver, part, lb = "greedy", *_greedy_cover(sub)
            elif colour is not None:
                solver, part, lb = "matching", *_konig_cover(sub, colour)
            elif method == "exact" or len(verts) <= exact_limit:
                solver, part, lb = "milp", *_milp_cover(sub, time_limit, strict=method == "exact")
                if lb < part.sum():  # not proven optimal in time: the greedy's cover, if smaller
                    g_part, g_lb = _greedy_cover(sub)
                    solver, lb = "milp+greedy", max(lb, g_lb)
                    part = g_part if g_part.sum() < part.sum() else part
            else:
                solver, part, lb = "greedy", *_greedy_cover(sub)
            cover[verts[part]] = True
            lower += lb
            exact &= lb == int(part.sum())
            runs[solver] = runs.get(solver, 0) + 1
    kept, removed = np.flatnonzero(~cover), np.flatnonzero(cover)
    if not return_result:
        return kept
    order = ("matching", "milp", "milp+greedy", "greedy")
    return PruningResult(kept=kept, removed=removed, radius=r, n_conflicts=int(len(edges)), exact=bool(exact),
                         solver="+".join(s for s in order if s in runs) or "none", lower_bound=int(lower),
                         components={s: runs[s] for s in order if s in runs})


def separation(X, M=None) -> np.ndarray:
    """The (n, n) matrix of ``s_M(x_i, x_j)`` (:func:`adversarial_pruning`), by direct
    differences: a reference for tests and small data."""
    X = np.asarray(X, dtype=np.float64)
    M = np.eye(X.shape[1]) if M is None else check_metric(M, X.shape[1])
    U = X[:, None, :] - X[None, :, :]
    MU = U @ M
    num, den = np.einsum("ijk,ijk->ij", U, MU), np.linalg.norm(MU, axis=2)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def conflict_graph(X, y_enc, M, r, *, device="auto") -> np.ndarray:
    """The conflicts ``(i, j)``, ``i < j``, different labels, ``s_M(x_i, x_j) < 2 r``, as an
    (E, 2) int array sorted by ``(i, j)``.

    Since ``||M u|| <= sqrt(lambda_max(M)) ||G u||``, ``s_M(a, b) >= sqrt(d_M(a, b) /
    lambda_max(M))``: a conflict has ``d_M < 4 r^2 lambda_max``. Pairs are screened on that
    in blocks of rows (one GEMM on ``X G^T`` per block, memory bounded, with a slack for
    round-off), and each candidate's ``s_M`` is recomputed from the differences of its
    rows of ``X G^T`` and ``X M``, free of the cancellation of expanded squares."""
    n = len(X)
    if r <= 0 or n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    dev = resolve_device(device)
    Xt = torch.as_tensor(X - X.mean(0), dtype=torch.float64, device=dev)  # centred: smaller round-off
    Z = Xt @ torch.as_tensor(components_from_metric(M).T, dtype=torch.float64, device=dev)
    W = Xt @ torch.as_tensor(M, dtype=torch.float64, device=dev)
    sq_z = (Z * Z).sum(1)
    lam = max(float(np.linalg.eigvalsh(M)[-1]), 0.0)
    threshold = 4 * r * r * lam * (1 + _SCREEN_SLACK) + 1e-12 * float(sq_z.max())
    labels = torch.as_tensor(y_enc, device=dev)
    step = max(1, _BLOCK_ELEMENTS // n)
    out = []
    for s in range(0, n - 1, step):
        e = min(n, s + step)
        ii, jj = torch.nonzero(pairwise_sq_dists(Z[s:e], Z[s:], sq_z[s:]) <= threshold, as_tuple=True)
        ii, jj = ii + s, jj + s
        keep = (jj > ii) & (labels[ii] != labels[jj])
        ii, jj = ii[keep], jj[keep]
        for c in range(0, len(ii), step * 64):
            a, b = ii[c:c + step * 64], jj[c:c + step * 64]
            num = (Z[a] - Z[b]).pow(2).sum(1)
            den = (W[a] - W[b]).norm(dim=1)
            sep = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
            hit = sep < 2 * r
            out.append(torch.stack([a[hit], b[hit]], 1).cpu().numpy())
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)


# --------------------------------------------------------------------------- inputs


def _check_inputs(X, y, M):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError("y contains NaN labels")
    classes, y_enc = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y holds a single class ({classes[0]!r}): pruning separates classes, it needs two "
                         "or more")
    M = np.eye(X.shape[1]) if M is None else check_metric(M, X.shape[1])
    return X, y_enc, M


# --------------------------------------------------------------------------- graph pieces


def _components(adj: sparse.csr_matrix):
    """(vertices, 2-colouring or None) of every component of ``adj`` with an edge.

    The colouring is the parity of the BFS depth from each component's root (a BFS
    from an extra vertex joined to every root); a component is bipartite iff no edge
    joins two vertices of the same parity."""
    n = adj.shape[0]
    n_comp, comp = connected_components(adj, directed=False)
    roots = np.unique(comp, return_index=True)[1]
    coo = adj.tocoo()
    ext = sparse.csr_matrix((np.ones(coo.nnz + len(roots)), (np.concatenate([coo.row, np.full(len(roots), n)]),
                                                             np.concatenate([coo.col, roots]))), shape=(n + 1, n + 1))
    order, pred = breadth_first_order(ext, n, directed=False, return_predecessors=True)
    depth = np.zeros(n + 1, dtype=np.int64)
    for v in order[1:]:
        depth[v] = depth[pred[v]] + 1
    parity = depth[:n] % 2
    odd = np.zeros(n_comp, dtype=bool)
    odd[comp[coo.row[parity[coo.row] == parity[coo.col]]]] = True
    sizes = np.bincount(comp, minlength=n_comp)
    members = np.argsort(comp, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for c in range(n_comp):
        if sizes[c] < 2:
            continue
        verts = members[starts[c]:starts[c + 1]]
        yield verts, (None if odd[c] else parity[verts])


def _konig_cover(adj: sparse.csr_matrix, colour: np.ndarray) -> tuple[np.ndarray, int]:
    """Minimum vertex cover of a bipartite graph (sides by ``colour``) and its size, by a
    maximum matching and König's construction: ``Z`` = vertices reachable from the
    unmatched left vertices by alternating paths; cover = (left - Z) + (right & Z)."""
    left, right = np.flatnonzero(colour == 0), np.flatnonzero(colour == 1)
    B = adj[left][:, right].tocsr()
    match_l = maximum_bipartite_matching(B, perm_type="column")  # left -> right (-1: unmatched)
    match_r = np.full(len(right), -1)
    matched = match_l >= 0
    match_r[match_l[matched]] = np.flatnonzero(matched)
    seen_l, seen_r = ~matched, np.zeros(len(right), dtype=bool)
    frontier = np.flatnonzero(seen_l)
    while len(frontier):
        nbrs = np.unique(B[frontier].indices)
        new_r = nbrs[~seen_r[nbrs]]
        seen_r[new_r] = True
        mates = match_r[new_r]
        if np.any(mates < 0):  # an augmenting path: the matching was not maximum
            raise RuntimeError("internal error: the bipartite matching is not maximum")
        new_l = mates[~seen_l[mates]]
        seen_l[new_l] = True
        frontier = new_l
    cover = np.zeros(len(colour), dtype=bool)
    cover[left[~seen_l]] = True
    cover[right[seen_r]] = True
    size = int(matched.sum())
    if cover.sum() != size or not _is_cover(adj, cover):
        raise RuntimeError("internal error: König's cover differs from the matching size")
    return cover, size


def _greedy_cover(adj: sparse.csr_matrix) -> tuple[np.ndarray, int]:
    """The 2-approximation (both ends of each uncovered edge, edges in (i, j) order),
    then the repair pass; returns the cover and its lower bound (the matching size)."""
    coo = sparse.triu(adj, k=1).tocsr().tocoo()
    cover = np.zeros(adj.shape[0], dtype=bool)
    matched = 0
    for i, j in zip(coo.row.tolist(), coo.col.tolist()):
        if not (cover[i] or cover[j]):
            cover[i] = cover[j] = True
            matched += 1
    for v in np.flatnonzero(cover):
        if cover[adj.indices[adj.indptr[v]:adj.indptr[v + 1]]].all():
            cover[v] = False
    return cover, matched


def _milp_cover(adj: sparse.csr_matrix, time_limit: float, *, strict: bool) -> tuple[np.ndarray, int]:
    """Minimum vertex cover by a binary program (HiGHS); the cover and a lower bound
    (the optimum when solved, else the dual bound; an infeasible incumbent: all vertices)."""
    coo = sparse.triu(adj, k=1).tocoo()
    m, n = len(coo.row), adj.shape[0]
    A = sparse.csr_matrix((np.ones(2 * m), (np.repeat(np.arange(m), 2), np.stack([coo.row, coo.col], 1).ravel())),
                          shape=(m, n))
    res = milp(np.ones(n), constraints=LinearConstraint(A, lb=1.0, ub=np.inf), integrality=np.ones(n),
               bounds=Bounds(0, 1), options={"time_limit": float(time_limit)})
    if res.status == 0:
        cover = res.x > 0.5
        if not _is_cover(adj, cover):
            raise RuntimeError("internal error: the MILP's solution leaves a conflict")
        return cover, int(cover.sum())
    if strict:
        raise RuntimeError(f"the exact solver did not prove optimality within time_limit={time_limit} s on a "
                           f"conflict component of {n} points ({res.message}); raise time_limit or use "
                           "method='auto' or 'greedy'")
    cover = res.x > 0.5 if res.x is not None else np.ones(n, dtype=bool)
    if not _is_cover(adj, cover):
        cover = np.ones(n, dtype=bool)
    bound = getattr(res, "mip_dual_bound", None)
    return cover, int(np.ceil(bound - 1e-6)) if bound is not None and np.isfinite(bound) else 0


def _is_cover(adj: sparse.csr_matrix, cover: np.ndarray) -> bool:
    coo = adj.tocoo()
    return bool(np.all(cover[coo.row] | cover[coo.col]))
