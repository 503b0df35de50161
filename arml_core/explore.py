"""Computations behind the app's pictures, so that its pages only draw.

Decision regions on a grid (:func:`decision_grid_2d`, or on a 2-D slice through a test
point, :func:`slice_directions` / :func:`decision_grid_slice`), the neighbours of a
point (:func:`neighbours`) and one point's adversarial example
(:func:`adversarial_example`: exact for 1-NN, the region attack for K-NN; ARML_NOTES
sections 5 and 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .knn import MahalanobisKNN


@dataclass
class DecisionGrid:
    """K-NN predictions on a regular grid ``xs x ys`` (``labels[j, i]`` at ``(xs[i], ys[j])``).

    For a slice, grid point ``(a, b)`` is the input ``origin + a * u + b * v``."""

    xs: np.ndarray
    ys: np.ndarray
    labels: np.ndarray
    origin: np.ndarray | None = None
    u: np.ndarray | None = None
    v: np.ndarray | None = None

    def to_input(self, a, b) -> np.ndarray:
        a, b = np.asarray(a, float), np.asarray(b, float)
        if self.origin is None:
            return np.stack([a, b], axis=-1)
        return self.origin + a[..., None] * self.u + b[..., None] * self.v


def _check_resolution(resolution: int) -> int:
    if not isinstance(resolution, (int, np.integer)) or not 10 <= resolution <= 1000:
        raise ValueError(f"resolution must be an integer between 10 and 1000, got {resolution!r}")
    return int(resolution)


def decision_grid_2d(knn: MahalanobisKNN, X, *, resolution: int = 200, margin: float = 0.1) -> DecisionGrid:
    """Predictions of a fitted K-NN over the bounding box of ``X`` (2-D data only)."""
    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"a 2-D decision grid needs 2 features, the data have {X.shape[-1]}; use a slice")
    n = _check_resolution(resolution)
    lo, hi = X.min(0), X.max(0)
    pad = margin * np.maximum(hi - lo, 1e-9)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    gx, gy = np.meshgrid(xs, ys)
    labels = knn.predict_encoded(np.column_stack([gx.ravel(), gy.ravel()])).reshape(n, n)
    return DecisionGrid(xs, ys, labels)


def slice_directions(x, delta, second: str | np.ndarray = "random", *, X_train=None, seed: int = 0):
    """Two orthonormal directions for a slice through ``x``: ``u`` along the adversarial
    direction ``delta`` and ``v`` from ``second`` ('random', 'pca' (the top principal
    direction of ``X_train`` orthogonal to u), 'feature:<i>' or an explicit vector)."""
    x = np.asarray(x, float)
    d = x.size
    delta = np.asarray(delta, float)
    if not np.all(np.isfinite(delta)) or np.linalg.norm(delta) == 0:
        raise ValueError("the adversarial direction is zero or undefined for this point "
                         "(it is misclassified or no attack succeeded); pick another point")
    u = delta / np.linalg.norm(delta)
    if isinstance(second, str):
        if second == "random":
            w = np.random.default_rng(seed).normal(size=d)
        elif second == "pca":
            if X_train is None:
                raise ValueError("the 'pca' direction needs the training data")
            Xc = np.asarray(X_train, float) - np.mean(X_train, axis=0)
            Xc = Xc - np.outer(Xc @ u, u)
            w = np.linalg.svd(Xc, full_matrices=False)[2][0]
        elif second.startswith("feature:"):
            i = int(second.split(":", 1)[1])
            if not 0 <= i < d:
                raise ValueError(f"feature index {i} out of range 0..{d - 1}")
            w = np.zeros(d)
            w[i] = 1.0
        else:
            raise ValueError(f"unknown second direction {second!r}: 'random', 'pca', 'feature:<i>' or a vector")
    else:
        w = np.asarray(second, float)
        if w.shape != (d,):
            raise ValueError(f"the second direction must have {d} entries")
    w = w - (w @ u) * u
    if np.linalg.norm(w) < 1e-9:
        raise ValueError("the second direction is parallel to the adversarial one; choose another")
    return u, w / np.linalg.norm(w)


def decision_grid_slice(knn: MahalanobisKNN, x, u, v, *, extent: float, resolution: int = 150) -> DecisionGrid:
    """Predictions on the plane ``x + a u + b v`` for ``a, b`` in ``[-extent, extent]``."""
    n = _check_resolution(resolution)
    if not extent > 0:
        raise ValueError("extent must be positive")
    xs = np.linspace(-extent, extent, n)
    ys = np.linspace(-extent, extent, n)
    grid = DecisionGrid(xs, ys, np.empty((n, n), int), np.asarray(x, float), np.asarray(u, float), np.asarray(v, float))
    ga, gb = np.meshgrid(xs, ys)
    grid.labels = knn.predict_encoded(grid.to_input(ga.ravel(), gb.ravel())).reshape(n, n)
    return grid


@dataclass
class NeighbourTable:
    indices: np.ndarray
    labels: np.ndarray
    distances: np.ndarray  # Mahalanobis distances (not squared)
    prediction: int


def neighbours(knn: MahalanobisKNN, x) -> NeighbourTable:
    """The K nearest training points of ``x``, their labels, distances and the vote."""
    d2, idx = knn.kneighbors(np.asarray(x, float)[None, :])
    labels = knn.y_train_[idx[0]]
    return NeighbourTable(idx[0], labels, np.sqrt(d2[0]), int(knn.predict_encoded(np.asarray(x, float)[None, :])[0]))


@dataclass
class AdversarialExample:
    """One test point's adversarial example: ``x_adv = x + (1 + PAST) delta`` lies just past
    the decision boundary; ``how`` says where ``delta`` comes from ('exact': the minimal
    1-NN perturbation; 'region attack': the K-NN region attack, an upper bound)."""

    x: np.ndarray
    delta: np.ndarray
    norm: float
    how: str
    x_adv: np.ndarray


PAST = 1e-4  # how far past the boundary (relative to ||delta||) the shown adversarial point lies


def adversarial_example(X_train, y_train, x, y, M, n_neighbors: int, *, box=None,
                        device: str = "auto") -> AdversarialExample:
    """The adversarial example of one correctly classified point ``x`` (label ``y``) under
    Mahalanobis K-NN: the exact minimal perturbation for K = 1, the region attack for
    K > 1. ValueError with a readable message when there is none (no attack success, or
    none inside ``box``)."""
    from .robustness import attack, minimal_perturbations

    x = np.asarray(x, dtype=float)
    X1, y1 = x[None, :], np.asarray([y])
    if int(n_neighbors) == 1:
        norms, deltas = minimal_perturbations(X_train, y_train, X1, y1, M, box=box, device=device)
        delta, norm, how = deltas[0], float(norms[0]), "exact"
    else:
        res = attack(X_train, y_train, X1, y1, M, int(n_neighbors), method="region", box=box, device=device)
        if not res.success[0] or not np.isfinite(res.norms[0]):
            raise ValueError("The attack found no adversarial point for this test point.")
        delta, norm, how = res.X_adv[0] - x, float(res.norms[0]), "region attack"
    if not np.isfinite(norm):
        raise ValueError("No adversarial point exists inside the box for this test point.")
    return AdversarialExample(x, delta, norm, how, x + delta * (1 + PAST))
