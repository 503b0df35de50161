"""Mahalanobis K-nearest-neighbour classifier (batched, CPU or CUDA)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from .device import resolve_device
from .metric import check_metric, components_from_metric

_BATCH_ELEMENTS = 2**24  # test x train entries held at once


def check_n_neighbors(n_neighbors, y=None) -> int:
    """Validate K: an odd positive integer, no larger than any class of ``y``."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise ValueError(f"K (n_neighbors) must be an odd positive integer, got {n_neighbors!r}")
    K = int(n_neighbors)
    if K < 1 or K % 2 == 0:
        raise ValueError(
            f"K (n_neighbors) must be odd and positive, got {K}: with an even K the majority "
            "vote can tie; use K-1 or K+1"
        )
    if y is not None:
        labels, counts = np.unique(np.asarray(y), return_counts=True)
        if len(labels) < 2:
            raise ValueError(
                f"the training labels hold a single class ({labels[0] if len(labels) else 'none'}); "
                "robustness needs at least two classes"
            )
        small = counts.argmin()
        if counts[small] < K:
            raise ValueError(
                f"K={K} is larger than class {labels[small].item()!r}, which has only {counts[small]} "
                f"training points; choose K <= {counts[small]} (odd) or add data"
            )
    return K


def pairwise_sq_dists(Za: torch.Tensor, Zb: torch.Tensor, sq_b: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between rows of ``Za`` and ``Zb`` (clamped at 0)."""
    if sq_b is None:
        sq_b = (Zb * Zb).sum(1)
    d = torch.addmm(sq_b[None, :], Za, Zb.T, alpha=-2.0)
    d += (Za * Za).sum(1, keepdim=True)
    return d.clamp_min_(0.0)


class MahalanobisKNN(ClassifierMixin, BaseEstimator):
    """K-NN under ``d_M(a, b) = (a-b)^T M (a-b)``; ``M=None`` is the Euclidean metric.

    Ties in the vote go to the smallest class index (as scikit-learn's
    ``KNeighborsClassifier``).
    """

    def __init__(self, M=None, n_neighbors: int = 1, device: str = "auto"):
        self.M = M
        self.n_neighbors = n_neighbors
        self.device = device

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n_samples, n_features), got shape {X.shape}")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        self.n_neighbors_ = check_n_neighbors(self.n_neighbors, y)
        if self.n_neighbors_ > len(X):
            raise ValueError(f"K={self.n_neighbors_} is larger than the {len(X)} training points")
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        if self.M is None:
            G = np.eye(X.shape[1])
        else:
            G = components_from_metric(check_metric(self.M, X.shape[1]))
        self.device_ = resolve_device(self.device)
        self.components_ = G
        self._G = torch.as_tensor(G, dtype=torch.float64, device=self.device_)
        self._Z = torch.as_tensor(X, dtype=torch.float64, device=self.device_) @ self._G.T
        self._sq = (self._Z * self._Z).sum(1)
        self._y = torch.as_tensor(y_enc, device=self.device_)
        self.X_train_, self.y_train_ = X, y_enc
        return self

    def _check_X(self, X) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[-1] if X.ndim else 0} features but the classifier was fitted "
                f"with {self.n_features_in_}"
            )
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        return torch.as_tensor(X, dtype=torch.float64, device=self.device_)

    def _batches(self, n: int):
        step = max(1, _BATCH_ELEMENTS // max(1, len(self.X_train_)))
        for s in range(0, n, step):
            yield slice(s, min(n, s + step))

    def kneighbors(self, X, n_neighbors: int | None = None):
        """Squared Mahalanobis distances and indices of the nearest training points."""
        k = self.n_neighbors_ if n_neighbors is None else int(n_neighbors)
        Xt = self._check_X(X)
        dists, idx = [], []
        for sl in self._batches(len(Xt)):
            d = pairwise_sq_dists(Xt[sl] @ self._G.T, self._Z, self._sq)
            v, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
            dists.append(v)
            idx.append(i)
        return torch.cat(dists).cpu().numpy(), torch.cat(idx).cpu().numpy()

    def predict_encoded(self, X) -> np.ndarray:
        """Predicted class indices (0..C-1, positions in ``classes_``)."""
        _, idx = self.kneighbors(X)
        votes = self.y_train_[idx]
        counts = np.zeros((len(votes), len(self.classes_)), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(len(votes)), votes.shape[1]), votes.ravel()), 1)
        return counts.argmax(1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_encoded(X)]
