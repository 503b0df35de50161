"""Metric learners: Euclidean, the metric-learn baselines and ARML (torch).

Every learner is a scikit-learn estimator whose single model attribute is
``components_`` (``G``, shape ``(n_components, n_features)``); the Mahalanobis
matrix ``M = G^T G`` and ``transform(X) = X G^T`` are derived from it
(``MahalanobisMixin``), as in metric-learn.
"""
from __future__ import annotations

import functools

import time
import warnings
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ..device import resolve_device

LOSSES = ("neg", "hinge", "exp", "logistic")
DEFAULT_RANDOM_STATE = 42


class MahalanobisMixin:
    """``get_mahalanobis_matrix`` / ``transform`` / ``get_metric`` from ``components_``."""

    def get_mahalanobis_matrix(self) -> np.ndarray:
        check_is_fitted(self, "components_")
        G = np.asarray(self.components_, dtype=np.float64)
        return G.T @ G

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "components_")
        X = validate_data(self, X, reset=False)
        return X @ np.asarray(self.components_).T

    def get_metric(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """A function returning the (non-squared) Mahalanobis distance of two points."""
        G = np.asarray(self.components_, dtype=np.float64)

        def metric(u, v):
            return float(np.linalg.norm(G @ (np.asarray(u, float) - np.asarray(v, float))))

        return metric


def _check_labels(y, *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    classes, y_enc = np.unique(y, return_inverse=True)
    if len(classes) < min_classes:
        raise ValueError(
            f"metric learning needs at least {min_classes} classes, the labels hold "
            f"{len(classes)} ({', '.join(map(str, classes[:5]))})"
        )
    return classes, y_enc


def mark_diverged(est, name: str, epoch: int) -> None:
    """Record (``converged_``, ``stop_reason_``) and warn that a torch learner's loss
    became non-finite at ``epoch``; the caller keeps the metric of the epoch before."""
    est.converged_ = False
    est.stop_reason_ = (
        f"the loss became non-finite at epoch {epoch}; the metric of epoch "
        f"{epoch - 1} is kept. Lower learning_rate (now {est.learning_rate})"
    )
    warnings.warn(f"{name} diverged: {est.stop_reason_}", ConvergenceWarning, stacklevel=3)


class Euclidean(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """The identity metric (``G = I``): the baseline every learner is compared with."""

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        self.components_ = np.eye(X.shape[1])
        return self


# ----------------------------------------------------------------------------------------
# ARML
# ----------------------------------------------------------------------------------------
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
    ``X``, ``P`` and ``N`` (ARML_NOTES section 3, without the clamp)."""
    zx, zp, zn = X @ G.T, P @ G.T, N @ G.T
    num = ((zx - zn) ** 2).sum(1) - ((zx - zp) ** 2).sum(1)
    den = 2.0 * ((zp - zn) @ G).norm(dim=1)  # M (p - n) = G^T G (p - n)
    return num / den.clamp_min(floor)


class ARML(MahalanobisMixin, TransformerMixin, BaseEstimator):
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
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        n_epochs: int = 1000,
        learning_rate: float = 1e-3,
        n_candidates: int = 10,
        loss: str = "neg",
        margin: float = 1.0,
        resample_every: int = 1,
        batch_size: int | None = None,
        device: str = "auto",
        random_state=None,
        callback: Callable[[int, float], object] | None = None,
        verbose: int = 0,
    ):
        self.n_components = n_components
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.n_candidates = n_candidates
        self.loss = loss
        self.margin = margin
        self.resample_every = resample_every
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.callback = callback
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _validate_params(self, n_features: int) -> None:
        def positive_int(name, value, allow_none=False):
            if allow_none and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        positive_int("n_epochs", self.n_epochs)
        positive_int("n_candidates", self.n_candidates)
        positive_int("resample_every", self.resample_every)
        positive_int("batch_size", self.batch_size, allow_none=True)
        positive_int("n_components", self.n_components, allow_none=True)
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components ({self.n_components}) cannot be greater than n_features ({n_features})"
            )
        if not (isinstance(self.learning_rate, (int, float)) and np.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (np.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"margin must be a positive number, got {self.margin!r}")

    def _loss(self, eps: torch.Tensor) -> torch.Tensor:
        if self.loss == "neg":
            return -eps.mean()
        if self.loss == "hinge":
            return torch.relu(self.margin - eps).mean()
        if self.loss == "exp":
            return torch.exp(-eps / self.margin).mean()
        return torch.nn.functional.softplus(-eps / self.margin).mean()

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        self._validate_params(X.shape[1])
        _, y_enc = _check_labels(y)
        counts = np.bincount(y_enc)
        usable = counts[y_enc] >= 2  # an anchor needs another point of its class
        if not usable.any():
            raise ValueError("every class has a single point: ARML needs same-class pairs")
        dev = resolve_device(self.device)
        self.device_ = str(dev)
        rng = check_random_state(self.random_state)
        gen = torch.Generator(device=dev).manual_seed(int(rng.randint(0, 2**31 - 1)))

        n, d = X.shape
        r = d if self.n_components is None else self.n_components
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        yt = torch.as_tensor(y_enc, device=dev)
        anchors = torch.as_tensor(np.flatnonzero(usable), device=dev)
        G = torch.eye(r, d, dtype=torch.float32, device=dev).requires_grad_(True)
        opt = torch.optim.Adam([G], lr=float(self.learning_rate))
        index = _NeighbourIndex(Xt, yt, self.n_candidates, shortlist=4 * self.n_candidates)
        batch = len(anchors) if self.batch_size is None else min(self.batch_size, len(anchors))

        self.loss_curve_ = []
        self.converged_ = True
        self.stop_reason_ = "completed"
        last_good = G.detach().clone()
        start = time.perf_counter()
        epoch = 0
        for epoch in range(1, self.n_epochs + 1):
            if (epoch - 1) % self.resample_every == 0:
                pos_nn, neg_nn = index.neighbours(G)
                pick_p = torch.randint(pos_nn.shape[1], (n,), device=dev, generator=gen)
                pick_n = torch.randint(neg_nn.shape[1], (n,), device=dev, generator=gen)
                p_idx = pos_nn[torch.arange(n, device=dev), pick_p]
                n_idx = neg_nn[torch.arange(n, device=dev), pick_n]
            order = anchors[torch.randperm(len(anchors), device=dev, generator=gen)] if batch < len(anchors) else anchors
            total = torch.zeros((), device=dev)
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                eps = triplet_eps(Xt[idx], Xt[p_idx[idx]], Xt[n_idx[idx]], G)
                loss = self._loss(eps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach() * len(idx)
            # one device->host transfer per epoch: the loss and whether G is finite
            total_v, g_finite = torch.stack([total, torch.isfinite(G).all().to(total.dtype)]).tolist()
            value = total_v / len(order)
            ok = np.isfinite(value) and bool(g_finite)
            if not ok:
                with torch.no_grad():
                    G.copy_(last_good)
                mark_diverged(self, "ARML", epoch)
                epoch -= 1
                break
            last_good = G.detach().clone()
            self.loss_curve_.append(value)
            if self.verbose and (epoch % max(1, self.n_epochs // 10) == 0 or epoch == 1):
                print(f"[ARML] epoch {epoch:5d}/{self.n_epochs}  loss {value:.6f}  "
                      f"({time.perf_counter() - start:.1f} s)")
            if self.callback is not None and self.callback(epoch, value) is False:
                self.stop_reason_ = f"stopped by the callback at epoch {epoch}"
                break

        self.components_ = last_good.double().cpu().numpy()
        self.n_iter_ = epoch
        self.n_neighbour_searches_ = (index.n_full_searches, index.n_partial_searches)
        self.fit_time_ = time.perf_counter() - start
        return self


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------
LEARNERS = {
    "euclidean": "Euclidean",
    "nca": "NCA",
    "lmnn": "LMNN",
    "itml": "ITML",
    "lfda": "LFDA",
    "arml": "ARML",
    "spectral": "Spectral defence",
}


def _metric_learn(name: str, params: dict):
    import metric_learn  # imported lazily: it is slow to import

    if name == "nca":
        params.setdefault("random_state", DEFAULT_RANDOM_STATE)
        return metric_learn.NCA(**params)
    if name == "lmnn":
        params.setdefault("random_state", DEFAULT_RANDOM_STATE)
        return metric_learn.LMNN(**params)
    if name == "itml":
        params.setdefault("random_state", DEFAULT_RANDOM_STATE)
        return metric_learn.ITML_Supervised(**params)
    if name == "lfda":
        return _lfda_class()(**params)
    raise KeyError(name)


LFDA_VARIANCE_CUTOFF = 1e-4


@functools.lru_cache(maxsize=1)
def _lfda_class():
    import metric_learn

    class LFDA(metric_learn.LFDA):
        """metric-learn's LFDA; where its solution is not finite, refitted in the
        principal subspace.

        LFDA solves a generalised eigenproblem with the within-class scatter, which is
        singular when some directions carry (almost) no variance (image data: constant
        border pixels); metric-learn then returns NaN or complex components. In that
        case only, directions whose variance is below ``LFDA_VARIANCE_CUTOFF`` times the
        largest are dropped (a PCA projection ``V``), LFDA is fitted on ``X V`` and the
        components are mapped back (``G = G_lfda V^T``); ``projected_rank_`` records
        the rank used (None: metric-learn's own solution)."""

        def fit(self, X, y):
            self.projected_rank_ = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # NaN from the singular case
                super().fit(X, y)
            G = self.components_
            if np.all(np.isfinite(G)) and not np.iscomplexobj(G):
                return self
            X = np.asarray(X, dtype=np.float64)
            s, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)[1:]
            r = int(np.sum(s**2 > LFDA_VARIANCE_CUTOFF * s[0] ** 2)) if s[0] > 0 else 0
            if r in (0, X.shape[1]):
                return self  # nothing to drop: the caller sees the non-finite metric
            super().fit(X @ Vt[:r].T, y)
            self.components_ = np.real(self.components_) @ Vt[:r]
            self.n_features_in_ = X.shape[1]
            self.projected_rank_ = r
            return self

    LFDA.__name__ = LFDA.__qualname__ = "LFDA"
    return LFDA


def make_learner(name: str, **params):
    """A fresh, unfitted learner by name (see ``LEARNERS``), with a fixed random state."""
    key = str(name).strip().lower()
    if key not in LEARNERS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(LEARNERS)}")
    try:
        if key == "euclidean":
            return Euclidean(**params)
        if key == "arml":
            params.setdefault("random_state", DEFAULT_RANDOM_STATE)
            return ARML(**params)
        if key == "spectral":
            from ..pairwise import SpectralDefence  # imported lazily: pairwise imports this module

            params.setdefault("random_state", DEFAULT_RANDOM_STATE)
            return SpectralDefence(**params)
        return _metric_learn(key, dict(params))
    except TypeError as exc:  # an unknown keyword
        raise ValueError(f"bad parameter for {LEARNERS[key]}: {exc}") from None
