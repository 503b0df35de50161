"""ARML (Wang et al., NeurIPS 2020, Algorithm 1; ARML_NOTES section 6) and the exact
nearest-neighbour index that keeps its triplet draws cheap."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from ..metric import triplet_margin
from ._base import _TorchLearner, check_param
from ._checkpoint import check_tensor

LOSSES = ("neg", "hinge", "exp", "logistic")


class _NeighbourIndex:
    """Exact ``m`` nearest same-class and other-class points of every training point
    under the current metric, at a fraction of a full search per epoch.

    A search keeps, per anchor ``i``, a shortlist of its ``L > m`` nearest points of
    each kind and the distance ``t_i`` of the nearest point *outside* the shortlist,
    both expressed under a reference metric ``G_ref``. Under a later ``G``, every
    point outside the shortlist is at least ``s * t_i`` away, with
    ``s = sigma_min(G G_ref^{-1})`` (``||G v|| >= s ||G_ref v||``). When the ``m``-th
    nearest inside the shortlist is no farther than that, the shortlist holds the
    exact ``m`` nearest. Anchors that fail the test are searched again under ``G``
    (their threshold converted to ``G_ref`` by the same inequality); when many fail,
    everything is rebuilt with ``G`` as the new reference. A non-square or singular
    ``G`` is searched in full every time.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, m: int, shortlist: int):
        self.X, self.y, self.m = X, y, m
        self.n = len(X)
        counts = torch.bincount(y)
        self.members = [torch.nonzero(y == c).flatten() for c in range(len(counts))]
        self.others = [torch.nonzero(y != c).flatten() for c in range(len(counts))]
        self.rank_in_class = torch.empty_like(y)
        for idx in self.members:
            self.rank_in_class[idx] = torch.arange(len(idx), device=y.device)
        self.L_pos = min(shortlist, int(counts.max()) - 1)
        self.L_neg = min(shortlist, self.n - int(counts.max()))
        self.G_ref_inv = None
        self.n_full_searches = 0
        self.n_partial_searches = 0
        self._chunk = max(1, 2**23 // max(1, self.n))

    def _search(self, Z: torch.Tensor, rows: torch.Tensor):
        """Shortlists (L nearest) and outside distances of anchors ``rows`` under ``Z``."""
        y = self.y
        n_rows = len(rows)
        pos_i = torch.zeros(n_rows, self.L_pos, dtype=torch.long, device=Z.device)
        neg_i = torch.zeros(n_rows, self.L_neg, dtype=torch.long, device=Z.device)
        pos_t = torch.full((n_rows,), float("inf"), dtype=Z.dtype, device=Z.device)
        neg_t = torch.full((n_rows,), float("inf"), dtype=Z.dtype, device=Z.device)
        sq = (Z * Z).sum(1)
        yr = y[rows]
        for c in torch.unique(yr).tolist():
            sel = torch.nonzero(yr == c).flatten()
            mem, oth = self.members[c], self.others[c]
            for s in range(0, len(sel), self._chunk):
                part = sel[s : s + self._chunk]
                anchors = rows[part]
                za = Z[anchors]
                for cols, out_i, out_t, L, same in (
                    (mem, pos_i, pos_t, self.L_pos, True),
                    (oth, neg_i, neg_t, self.L_neg, False),
                ):
                    d = torch.addmm(sq[cols][None, :], za, Z[cols].T, alpha=-2.0)
                    d.add_(sq[anchors][:, None]).clamp_min_(0.0)
                    if same:  # an anchor is not its own neighbour
                        d[torch.arange(len(part), device=d.device), self.rank_in_class[anchors]] = float("inf")
                    width = min(L + 1, d.shape[1])
                    v, j = torch.topk(d, width, dim=1, largest=False, sorted=True)
                    if width > L:
                        out_i[part] = cols[j[:, :L]]
                        out_t[part] = v[:, L].sqrt()
                    else:  # a small class: all of it, repeated to the common width
                        out_i[part] = cols[j[:, torch.arange(L, device=j.device) % width]]
        return pos_i, pos_t, neg_i, neg_t

    def _rebuild(self, G: torch.Tensor) -> None:
        rows = torch.arange(self.n, device=self.X.device)
        self.pos_list, self.pos_out, self.neg_list, self.neg_out = self._search(self.X @ G.T, rows)
        self.n_full_searches += 1
        self.G_ref_inv = None
        if G.shape[0] == G.shape[1]:
            inv = torch.linalg.inv_ex(G.double())[0]
            if torch.isfinite(inv).all() and torch.linalg.svdvals(G.double()).min() > 1e-6:
                self.G_ref_inv = inv.to(G.dtype)

    def _take(self, Za, lst, Z=None):
        """The m nearest among each anchor's shortlist, and the m-th distance."""
        Z = Za if Z is None else Z
        d = ((Za[:, None, :] - Z[lst]) ** 2).sum(-1)  # (n, L)
        v, j = torch.topk(d, min(self.m, lst.shape[1]), dim=1, largest=False, sorted=True)
        return torch.gather(lst, 1, j), v[:, -1].sqrt()

    def neighbours(self, G: torch.Tensor):
        """(same-class, other-class) index matrices of the m nearest, exact under G."""
        G = G.detach()
        if self.G_ref_inv is None:
            self._rebuild(G)
            return self._take(self.X @ G.T, self.pos_list)[0], self._take(self.X @ G.T, self.neg_list)[0]
        Z = self.X @ G.T
        sv = torch.linalg.svdvals((G @ self.G_ref_inv).double())  # one SVD for both bounds below
        s = sv.min().to(G.dtype)
        pos, pos_far = self._take(Z, self.pos_list)
        neg, neg_far = self._take(Z, self.neg_list)
        slack = 1.0 - 1e-5  # rounding in float32
        bad = (pos_far > s * self.pos_out * slack) | (neg_far > s * self.neg_out * slack)
        n_bad = int(bad.sum())
        if n_bad == 0:
            return pos, neg
        if n_bad > self.n // 4:
            self._rebuild(G)
            return self._take(Z, self.pos_list)[0], self._take(Z, self.neg_list)[0]
        rows = torch.nonzero(bad).flatten()
        pi, pt, ni, nt = self._search(Z, rows)
        # thresholds under G -> under G_ref: ||G_ref v|| >= ||G v|| / sigma_max(G G_ref^{-1})
        back = 1.0 / sv.max().to(pt.dtype)
        self.pos_list[rows], self.neg_list[rows] = pi, ni
        self.pos_out[rows], self.neg_out[rows] = pt * back, nt * back
        self.n_partial_searches += 1
        pos[rows] = self._take(Z[rows], pi, Z)[0]
        neg[rows] = self._take(Z[rows], ni, Z)[0]
        return pos, neg



def triplet_eps(X, P, N, G: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Signed triplet margin ``(d_M(x, n) - d_M(x, p)) / (2 ||M (p - n)||)`` for rows of
    ``X``, ``P`` and ``N`` under ``M = G^T G`` (:func:`arml_core.metric.triplet_margin`);
    the denominator is floored at ``floor`` to keep it finite."""
    zx, zp, zn = X @ G.T, P @ G.T, N @ G.T
    d_xn, d_xp = ((zx - zn) ** 2).sum(1), ((zx - zp) ** 2).sum(1)
    den = 2.0 * ((zp - zn) @ G).norm(dim=1)  # M (p - n) = G^T G (p - n)
    return triplet_margin(d_xn, d_xp, denominator=den.clamp_min(floor))


class ARML(_TorchLearner):
    """Adversarially Robust Metric Learning (Wang et al., NeurIPS 2020, Algorithm 1).

    Minimises the mean of ``loss(eps_t(p_i, n_i, x_i))`` over the training points,
    where ``p_i`` / ``n_i`` are drawn at random among the ``n_candidates`` nearest
    same-class / other-class points under the current metric, re-drawn every
    ``resample_every`` epochs. The nearest-neighbour sets are exact (see
    ``_NeighbourIndex``); triplet selection carries no gradient.

    Parameters
    ----------
    n_components : int or None
        Rank of ``G`` (rows); None keeps ``n_features``. ``G`` starts as (the first
        rows of) the identity.
    n_epochs, learning_rate : Adam on ``G``; full-batch when ``batch_size`` is None.
    n_candidates : int, the ``m`` nearest of each kind triplets are drawn from.
    loss : 'neg' (``-eps``), 'hinge' (``[margin - eps]_+``), 'exp' (``exp(-eps/margin)``),
        'logistic' (``log(1 + exp(-eps/margin))``).
    margin : float, the scale of the hinge/exp/logistic losses (ignored by 'neg').
    device : 'auto', 'cpu' or 'cuda'.
    random_state : int, RandomState or None; nothing is seeded globally.
    callback : callable ``callback(epoch, loss)`` called after every epoch (1-based);
        returning ``False`` stops training early.
    verbose : int, prints a line every ``max(1, n_epochs // 10)`` epochs when > 0.
    checkpoint, checkpoint_every : a file to save the fit's state in every
        ``checkpoint_every`` epochs (default 10) and on a stop by the callback; a later
        fit with the same data and parameters resumes from it and gives the same result
        as one never interrupted (see ``_TorchLearner``). None (default): no checkpoint.

    Attributes
    ----------
    components_, loss_curve_ (mean loss per epoch), n_iter_, converged_, stop_reason_,
    fit_time_, device_, resumed_from_ (see ``_TorchLearner``), n_neighbour_searches_
    (full, partial).
    """

    _log_name = "ARML"

    def __init__(self, n_components: int | None = None, *, n_epochs: int = 1000, learning_rate: float = 1e-3,
                 n_candidates: int = 10, loss: str = "neg", margin: float = 1.0, resample_every: int = 1,
                 batch_size: int | None = None, device: str = "auto", random_state=None,
                 callback: Callable[[int, float], object] | None = None, verbose: int = 0,
                 checkpoint=None, checkpoint_every: int | None = None):
        super().__init__(n_components, n_epochs=n_epochs, learning_rate=learning_rate, device=device,
                         random_state=random_state, callback=callback, verbose=verbose, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every)
        self.n_candidates, self.resample_every, self.batch_size = n_candidates, resample_every, batch_size
        self.loss, self.margin = loss, margin

    def _validate_params(self, n_features: int | None = None) -> None:
        super()._validate_params(n_features)
        check_param(self.n_candidates, "n_candidates", "positive int")
        check_param(self.resample_every, "resample_every", "positive int")
        check_param(self.batch_size, "batch_size", "positive int", allow_none=True)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_param(self.margin, "margin", "positive")

    def _loss(self, eps: torch.Tensor) -> torch.Tensor:
        if self.loss == "neg":
            return -eps.mean()
        if self.loss == "hinge":
            return torch.relu(self.margin - eps).mean()
        if self.loss == "exp":
            return torch.exp(-eps / self.margin).mean()
        return torch.nn.functional.softplus(-eps / self.margin).mean()

    def _setup(self, X, y, y_enc, G, rng) -> SimpleNamespace:
        counts = np.bincount(y_enc)
        usable = counts[y_enc] >= 2  # an anchor needs another point of its class
        if not usable.any():
            raise ValueError("every class has a single point: ARML needs same-class pairs")
        dev = G.device
        gen = torch.Generator(device=dev).manual_seed(int(rng.randint(0, 2**31 - 1)))
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        anchors = torch.as_tensor(np.flatnonzero(usable), device=dev)
        index = _NeighbourIndex(Xt, torch.as_tensor(y_enc, device=dev), self.n_candidates,
                                shortlist=4 * self.n_candidates)
        batch = len(anchors) if self.batch_size is None else min(self.batch_size, len(anchors))
        return SimpleNamespace(X=Xt, anchors=anchors, index=index, batch=batch, gen=gen, p_idx=None, n_idx=None)

    def _epoch(self, state, G, opt, epoch):
        s, dev, n = state, G.device, len(state.X)
        if (epoch - 1) % self.resample_every == 0:
            pos_nn, neg_nn = s.index.neighbours(G)
            pick_p = torch.randint(pos_nn.shape[1], (n,), device=dev, generator=s.gen)
            pick_n = torch.randint(neg_nn.shape[1], (n,), device=dev, generator=s.gen)
            s.p_idx = pos_nn[torch.arange(n, device=dev), pick_p]
            s.n_idx = neg_nn[torch.arange(n, device=dev), pick_n]
        if s.batch < len(s.anchors):
            order = s.anchors[torch.randperm(len(s.anchors), device=dev, generator=s.gen)]
        else:
            order = s.anchors
        total = torch.zeros((), device=dev)
        for start in range(0, len(order), s.batch):
            idx = order[start : start + s.batch]
            eps = triplet_eps(s.X[idx], s.X[s.p_idx[idx]], s.X[s.n_idx[idx]], G)
            loss = self._loss(eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total = total + loss.detach() * len(idx)
        # one device->host transfer per epoch: the loss and whether G is finite
        total_v, g_finite = torch.stack([total, torch.isfinite(G).all().to(total.dtype)]).tolist()
        value = total_v / len(order)
        return value, bool(np.isfinite(value) and bool(g_finite)), {}

    _INDEX_STATE = ("pos_list", "pos_out", "neg_list", "neg_out")

    def _state_dict(self, state) -> dict:
        """The random generator, the current triplets and the neighbour index."""
        idx = state.index
        out = {"gen": state.gen.get_state(), "p_idx": state.p_idx, "n_idx": state.n_idx,
               "searches": torch.tensor([idx.n_full_searches, idx.n_partial_searches]),
               "G_ref_inv": idx.G_ref_inv}
        out.update({k: getattr(idx, k, None) for k in self._INDEX_STATE})
        return out

    def _load_state_dict(self, state, saved: dict) -> None:
        idx, n, dev = state.index, len(state.X), state.X.device
        d = state.X.shape[1]
        shapes = {"pos_list": ((n, idx.L_pos), torch.long), "neg_list": ((n, idx.L_neg), torch.long),
                  "pos_out": ((n,), torch.float32), "neg_out": ((n,), torch.float32)}
        index = {k: check_tensor(saved[k], k, *shapes[k], high=n, finite=False) for k in self._INDEX_STATE}
        inv = saved["G_ref_inv"]
        inv = None if inv is None else check_tensor(inv, "G_ref_inv", (d, d), torch.float32)
        triplets = [None if saved[k] is None else check_tensor(saved[k], k, (n,), torch.long, high=n)
                    for k in ("p_idx", "n_idx")]
        searches = check_tensor(saved["searches"], "searches", (2,), torch.long).tolist()
        state.gen.set_state(check_tensor(saved["gen"], "gen", state.gen.get_state().shape, torch.uint8).cpu())
        for k, v in index.items():
            setattr(idx, k, v.to(dev))
        idx.G_ref_inv = None if inv is None else inv.to(dev)
        state.p_idx, state.n_idx = (None if t is None else t.to(dev) for t in triplets)
        idx.n_full_searches, idx.n_partial_searches = searches

    def _state_bytes(self, n: int, d: int) -> int:
        width = 2 * 4 * self.n_candidates + 2
        return 8 * n * width + 16 * n + 4 * d * d + 8192

    def _finish(self, state) -> None:
        self.n_neighbour_searches_ = (state.index.n_full_searches, state.index.n_partial_searches)
