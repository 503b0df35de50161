"""Certified lower bound on the minimal adversarial l2 perturbation of Mahalanobis K-NN.

:func:`certified_radii` evaluates ARML Theorem 1 (``ARML_NOTES.md`` sections 3-4): for a
correctly classified ``x`` with label ``y`` and ``k = (K + 1) / 2``,
``eps*(x) >= kth_min_n kth_max_p eps_t(p, n, x)`` over other-class ``n`` and same-class
``p``, with the triplet margin of :func:`arml_core.metric.triplet_margin` clamped at 0.
Three evaluations of the same bound, all exact (``method``): 'naive', 'cached' and
'pruned' (:class:`_ClassBlock`). :func:`certified_radii_bruteforce` is a direct
transcription with Python loops, for tests.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import PointProgress, check_choice, check_data, check_integer
from ..device import resolve_device
from ..knn import MahalanobisKNN, check_n_neighbors, pairwise_sq_dists
from ..metric import components_from_metric, triplet_margin

METHODS = ("pruned", "cached", "naive")
_ZERO_DENOM = 1e-12  # c_pn below this times 2 max_i ||M x_i|| (relative, no absolute floor) means M (p - n) = 0


def _zero_denominator(W) -> float:
    """The threshold under which a pair denominator ``c_pn = 2 ||M (p - n)||`` counts as 0:
    ``_ZERO_DENOM * 2 max_i ||M x_i||`` over the training rows ``W = X M``. Relative to the
    scale of ``M`` only, so rescaling ``M`` by ``c > 0`` rescales it by ``c`` too and the
    radii do not change (the bound is invariant, ARML_NOTES section 3)."""
    if isinstance(W, torch.Tensor):
        return _ZERO_DENOM * 2.0 * float(W.norm(dim=1).max())
    return _ZERO_DENOM * 2.0 * float(np.linalg.norm(W, axis=1).max())


def certified_radii(
    X_train,
    y_train,
    X_test,
    y_test,
    M,
    n_neighbors: int,
    *,
    device: str = "auto",
    method: str = "pruned",
    n_screen: int | None = None,
    memory_budget: int = 2**27,
    progress: PointProgress | None = None,
) -> np.ndarray:
    """Certified robust radius (l2, input space) of every test point; 0 where misclassified.

    ``M`` is the Mahalanobis matrix (``None``: Euclidean), ``n_neighbors`` the odd K.
    ``method`` chooses the evaluation, all three exact and equal:

    * ``'naive'``: the pair denominators ``c_pn = 2 ||M (p - n)||`` recomputed for every
      test point (O(N^2 D) per point); the baseline of the speed benchmark.
    * ``'cached'``: ``c_pn`` computed once per class (a Euclidean distance matrix of the
      rows of ``X M``) and reused for every test point of that class.
    * ``'pruned'`` (default): as ``'cached'``, and per test point a cheap lower bound on
      every negative's inner value discards the negatives that cannot be among the k
      smallest (:meth:`_ClassBlock.pruned`); ``n_screen`` (default ``k``) nearest
      same-class points make that bound.

    ``memory_budget`` caps the number of float64 entries held in one block (about
    1 GiB at the default); larger class blocks are processed in chunks of negatives.
    ``progress(done, total)`` is called as test points are finished.
    """
    check_choice("method", method, METHODS)
    check_integer("n_screen", n_screen, 1, allow_none=True)
    X_train, y_train, X_test, y_test, M = check_data(X_train, y_train, X_test, y_test, M)
    K = check_n_neighbors(n_neighbors, y_train)
    k = (K + 1) // 2
    dev = resolve_device(device)
    n_test = len(X_test)
    radii = np.zeros(n_test)
    if n_test == 0:
        return radii

    knn = MahalanobisKNN(M, n_neighbors=K, device=dev).fit(X_train, y_train)
    classes = knn.classes_
    y_tr = np.searchsorted(classes, y_train)
    known = np.isin(y_test, classes)
    y_te = np.where(known, np.searchsorted(classes, y_test).clip(0, len(classes) - 1), -1)
    correct = known & (knn.predict_encoded(X_test) == y_te)

    G = torch.as_tensor(components_from_metric(M), dtype=torch.float64, device=dev)
    Mt = torch.as_tensor(M, dtype=torch.float64, device=dev)
    Xtr = torch.as_tensor(X_train, dtype=torch.float64, device=dev)
    Xte = torch.as_tensor(X_test, dtype=torch.float64, device=dev)
    Ztr, Zte = Xtr @ G.T, Xte @ G.T
    W = Xtr @ Mt  # rows M x_i (M symmetric): c_pn = 2 ||W_p - W_n||
    sq_tr = (Ztr * Ztr).sum(1)
    lam_max = float(np.linalg.eigvalsh(M).max()) * (1 + 1e-9)  # ||M v|| <= sqrt(lam) ||v||_M

    done = int((~correct).sum())
    if progress is not None:
        progress(done, n_test)
    for c in range(len(classes)):
        rows = np.flatnonzero(correct & (y_te == c))
        if len(rows) == 0:
            continue
        pos = torch.as_tensor(np.flatnonzero(y_tr == c), device=dev)
        neg = torch.as_tensor(np.flatnonzero(y_tr != c), device=dev)
        block = _ClassBlock(Ztr, sq_tr, W, pos, neg, k, memory_budget, lam_max)
        # test points of this class in blocks whose a/b matrices fit the budget
        step = max(1, memory_budget // (4 * len(X_train)))
        for s in range(0, len(rows), step):
            chunk = rows[s : s + step]
            zt = Zte[torch.as_tensor(chunk, device=dev)]
            if method == "naive":
                vals = block.naive(zt)
            elif method == "cached":
                vals = block.cached(zt)
            else:
                vals = block.pruned(zt, n_screen)
            radii[chunk] = np.clip(vals.cpu().numpy(), 0.0, None)
            done += len(chunk)
            if progress is not None:
                progress(done, n_test)
    return radii


class _ClassBlock:
    """The block of one class ``c``: its training points (the positives), the others (the
    negatives) and their pair denominators, reused by every test point of class ``c``.

    The denominators are stored as reciprocals ``1 / c_pn`` (0 for the degenerate pairs
    with ``M (p - n) = 0``: n and p are then always equidistant, and 0 is the
    conservative value), both as ``(n_p, n_n)`` and transposed, so that every
    reduction over positives runs along a contiguous axis.
    """

    def __init__(self, Ztr, sq_tr, W, pos, neg, k, budget, lam_max: float = 1.0):
        self.k = k
        self.sqrt_lam = math.sqrt(max(lam_max, 0.0))
        self.Zp, self.Zn = Ztr[pos], Ztr[neg]
        self.sqp, self.sqn = sq_tr[pos], sq_tr[neg]
        self.Wp, self.Wn = W[pos], W[neg]
        self.budget = budget
        n_p, n_n = len(pos), len(neg)
        if k > n_p or k > n_n:
            raise ValueError(
                f"K needs at least k={k} points of each class and of the other classes"
            )
        self._tiny = _zero_denominator(W)
        self.cached_all = n_p * n_n <= budget
        self._inv_den_all = None

    @property
    def inv_den_all(self) -> torch.Tensor:
        """All reciprocal denominators, (n_n, n_p), computed once on first use."""
        if self._inv_den_all is None:
            self._inv_den_all = self._inv_denoms(self.Wn, self.Wp)
        return self._inv_den_all

    def _inv_denoms(self, Wa, Wb) -> torch.Tensor:
        """1 / (2 ||Wa_i - Wb_j||) with 0 for the degenerate pairs."""
        inv = torch.cdist(Wa, Wb).mul_(2.0)
        degenerate = inv <= self._tiny
        return inv.reciprocal_().masked_fill_(degenerate, 0.0)

    def _kth_max_last(self, eps: torch.Tensor) -> torch.Tensor:
        return torch.topk(eps, self.k, dim=-1, sorted=True).values[..., -1]

    def _kth_min_last(self, v: torch.Tensor) -> torch.Tensor:
        return torch.topk(v, self.k, dim=-1, largest=False, sorted=True).values[..., -1]

    def _sq_dists(self, zt):
        """``a``: squared distances of test points ``zt`` (in ``Z``) to the negatives (T, n_n);
        ``b``: to the positives (T, n_p)."""
        a = pairwise_sq_dists(zt, self.Zn, self.sqn)  # (T, n_n)
        b = pairwise_sq_dists(zt, self.Zp, self.sqp)  # (T, n_p)
        return a, b

    def _inner_block(self, a, b, inv_den) -> torch.Tensor:
        """kth_max over p of eps_t for a (T, m) block of negatives; inv_den is (T|1, m, n_p)."""
        return self._kth_max_last(triplet_margin(a[:, :, None], b[:, None, :], inv_denominator=inv_den))

    # -- the three evaluations -------------------------------------------------------------
    def naive(self, zt) -> torch.Tensor:
        """Recompute every denominator for every test point (the benchmark's baseline)."""
        n_p, n_n = len(self.Zp), len(self.Zn)
        step = max(1, min(n_n, self.budget // max(1, n_p)))
        res = []
        for t in range(len(zt)):
            a, b = self._sq_dists(zt[t : t + 1])
            inner = torch.empty(1, n_n, dtype=a.dtype, device=a.device)
            for s in range(0, n_n, step):
                sl = slice(s, min(n_n, s + step))
                inv_den = self._inv_denoms(self.Wn[sl], self.Wp)[None]
                inner[:, sl] = self._inner_block(a[:, sl], b, inv_den)
            res.append(self._kth_min_last(inner))
        return torch.cat(res)

    def cached(self, zt) -> torch.Tensor:
        """Every negative evaluated, denominators computed once per class (or per chunk)."""
        n_p, n_n = len(self.Zp), len(self.Zn)
        a, b = self._sq_dists(zt)
        T = len(zt)
        inner = torch.empty(T, n_n, dtype=a.dtype, device=a.device)
        col = max(1, min(n_n, self.budget // max(1, 2 * n_p)))
        row = max(1, self.budget // max(1, 2 * col * n_p))
        for s in range(0, n_n, col):
            sl = slice(s, min(n_n, s + col))
            inv_den = self.inv_den_all[sl] if self.cached_all else self._inv_denoms(self.Wn[sl], self.Wp)
            for r in range(0, T, row):
                rs = slice(r, r + row)
                inner[rs, sl] = self._inner_block(a[rs, sl], b[rs], inv_den[None])
        return self._kth_min_last(inner)

    def _exact_inner(self, a, b, cand) -> torch.Tensor:
        """Exact inner values (k-th largest over all positives) of negatives ``cand``
        (t, m) for test points with distances ``a`` (t, n_n) and ``b`` (t, n_p)."""
        t, m = cand.shape
        n_p = len(self.Zp)
        inner = torch.empty(cand.shape, dtype=a.dtype, device=a.device)
        step = max(1, self.budget // max(1, 3 * m * n_p))
        for r in range(0, t, step):  # bounded memory for large m
            rs = slice(r, r + step)
            cols, c_pos = torch.unique(cand[rs], return_inverse=True)
            inv_den = self._inv_denoms(self.Wn[cols], self.Wp)[c_pos]  # (t, m, n_p)
            inner[rs] = self._inner_block(torch.gather(a[rs], 1, cand[rs]), b[rs], inv_den)
        return inner

    def pruned(self, zt, n_screen: int | None) -> torch.Tensor:
        """Exact, evaluating only the negatives that can matter.

        1. ``U``: the k-th smallest inner value over the ``m0`` nearest negatives, an
           upper bound on the answer.
        2. Metric bound: ``||M v|| <= sqrt(lam_max) ||v||_M`` and the triangle inequality
           give, for ``a_n >= b_(k)`` (the k-th nearest positive), an inner value of at
           least ``(sqrt(a_n) - sqrt(b_(k))) / (2 sqrt(lam_max))``. Negatives whose bound
           exceeds ``U`` cannot be among the k smallest: only a prefix ``R`` of the
           negatives in order of distance remains.
        3. On ``R``, a tighter bound: the k-th largest over the ``s`` nearest positives
           (a subset) with the exact denominators; with ``s == k`` a minimum.
        4. Negatives of ``R`` in increasing bound are evaluated exactly until the bound
           of the next one is at least the current k-th smallest value.
        Only the denominators these steps touch are computed.
        """
        k = self.k
        n_p, n_n = len(self.Zp), len(self.Zn)
        a, b = self._sq_dists(zt)
        T = len(zt)
        # 1-2: the prefix R of negatives by distance that can matter
        m0 = min(n_n, max(2 * k, 16))
        U = self._kth_min_last(self._exact_inner(a, b, torch.topk(a, m0, dim=1, largest=False).indices))
        bk = torch.topk(b, k, dim=1, largest=False).values[:, -1]
        # (+1e-300 only keeps thr > 0: the range rule of check_metric puts every non-zero
        # squared distance far above it, at any scale of M)
        thr = (bk.sqrt() + 2.0 * self.sqrt_lam * U.clamp_min(0.0)).square() * (1 + 1e-9) + 1e-300
        L = max(k, int((a <= thr[:, None]).sum(1).max()))
        aR, R = torch.topk(a, L, dim=1, largest=False, sorted=True)  # (T, L)
        outside = aR > thr[:, None]  # beyond this point's own prefix: inner value > U
        # 3: the tighter bound on R
        s = min(n_p, max(k, n_screen) if n_screen is not None else k)
        bS, S = torch.topk(b, s, dim=1, largest=False)  # (T, s)
        LB = torch.empty(T, L, dtype=a.dtype, device=a.device)
        tb = max(1, min(T, self.budget // max(1, 4 * s * L), int(math.sqrt(self.budget / max(1, 4 * s * L)))))
        for t0 in range(0, T, tb):
            ts = slice(t0, t0 + tb)
            rows, S_pos = torch.unique(S[ts], return_inverse=True)
            cols, R_pos = torch.unique(R[ts], return_inverse=True)
            inv = self._inv_denoms(self.Wp[rows], self.Wn[cols])  # (|rows|, |cols|)
            inv = inv[S_pos[:, :, None], R_pos[:, None, :]]  # (t, s, L)
            eps = triplet_margin(aR[ts, None, :], bS[ts, :, None], inv_denominator=inv)
            LB[ts] = eps.min(1).values if s == k else torch.topk(eps, k, dim=1).values[:, -1]
        LB.masked_fill_(outside, float("inf"))
        # 4: exact values in increasing bound until proven
        out = torch.empty(T, dtype=a.dtype, device=a.device)
        todo = torch.arange(T, device=a.device)
        m = min(L, max(4 * k, 32))
        while len(todo):
            lb, pos = torch.topk(LB[todo], min(L, m + 1), dim=1, largest=False, sorted=True)
            cand = torch.gather(R[todo], 1, pos[:, :m])
            val = self._kth_min_last(self._exact_inner(a[todo], b[todo], cand))
            if m >= L:
                out[todo] = val
                break
            # every other negative of R has an inner value >= lb[:, m]; outside R, > U >= answer
            proven = lb[:, m] >= val
            out[todo[proven]] = val[proven]
            todo = todo[~proven]
            m = min(L, m * 4)
        return out


def certified_radii_bruteforce(X_train, y_train, X_test, y_test, M, n_neighbors) -> np.ndarray:
    """Direct transcription of the bound with Python loops over test points (slow)."""
    X_train, y_train, X_test, y_test, M = check_data(X_train, y_train, X_test, y_test, M)
    K = check_n_neighbors(n_neighbors, y_train)
    k = (K + 1) // 2
    pred = MahalanobisKNN(M, n_neighbors=K, device="cpu").fit(X_train, y_train).predict(X_test)
    out = np.zeros(len(X_test))
    tiny = _zero_denominator(X_train @ M)
    for t, (x, y) in enumerate(zip(X_test, y_test)):
        if pred[t] != y:
            continue
        P, Nn = X_train[y_train == y], X_train[y_train != y]
        dP = np.einsum("ij,jk,ik->i", P - x, M, P - x)
        dN = np.einsum("ij,jk,ik->i", Nn - x, M, Nn - x)
        inner = np.empty(len(Nn))
        for j, n in enumerate(Nn):
            den = 2.0 * np.linalg.norm((P - n) @ M, axis=1)
            ok = den > tiny
            eps_t = triplet_margin(dN[j], dP, denominator=np.where(ok, den, 1.0))
            eps = np.where(ok, np.maximum(eps_t, 0), 0.0)
            inner[j] = np.sort(eps)[-k]
        out[t] = np.sort(inner)[k - 1]
    return out
