"""The spectral defence (Huai et al., TKDD 2022; ARML_NOTES section 8): a margin loss
over similar / dissimilar pairs plus a penalty on the top eigenvalues of ``W^T W``."""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch

from ..metric import metric_from_components
from ..pairwise import resolve_gamma, sample_pairs
from ._base import _TorchLearner, check_param


class SpectralDefence(_TorchLearner):
    """Margin loss over pairs plus a penalty on the top eigenvalues of ``W^T W``
    (Huai et al., TKDD 2022; ``ARML_NOTES.md`` section 8).

    Minimises, over the linear map ``W`` (``components_``),

        mean_{(i, j)} (1 + y_ij (D_ij - gamma))_+  +  penalty * sum_{k <= n_eigen} w_k lambda_k(W^T W)

    where ``y_ij = +1`` for same-class and ``-1`` for different-class pairs (a similar
    pair costs nothing once ``D_ij <= gamma - 1``, a dissimilar one once
    ``D_ij >= gamma + 1``), ``lambda_1 >= lambda_2 >= ...`` and ``w = eigen_weights``
    (default all ones). ``penalty=0`` is the plain margin loss. The training pairs
    (``n_pairs // 2`` similar, the rest dissimilar, :func:`arml_core.pairwise.sample_pairs`)
    are drawn once in ``fit`` with ``random_state``.

    Parameters
    ----------
    n_components : int or None, rows of ``W`` (None: ``n_features``); ``W`` starts as (the
        first rows of) the identity.
    gamma : float or ``'q<quantile>'`` (e.g. ``'q0.5'``: the quantile of the training
        pairs' distances under the initial ``W``, ``threshold_from_quantile`` on the
        balanced training pairs); the value used is ``gamma_``. Default 2, as published.
    penalty : float >= 0, the weight of the eigenvalue term.
    n_eigen : int, how many of the largest eigenvalues are penalised.
    eigen_weights : sequence of ``n_eigen`` non-negative weights, or None (ones).
    n_pairs : int, training pairs.
    n_epochs, learning_rate : full-batch Adam on ``W``.
    device : 'auto', 'cpu' or 'cuda'.
    random_state : int, RandomState or None; nothing is seeded globally.
    callback : ``callback(epoch, loss)`` after every epoch (1-based); returning ``False``
        stops training.
    verbose : int, prints a line every ``max(1, n_epochs // 10)`` epochs when > 0.
    checkpoint, checkpoint_every : a file to save the fit's state in every
        ``checkpoint_every`` epochs (default 10); see ``_TorchLearner``. None: no checkpoint.

    Attributes
    ----------
    components_, gamma_, loss_curve_ (total loss per epoch), margin_curve_ (the margin
    part), eigenvalues_ (of ``W^T W`` at the end, descending), n_iter_, converged_,
    stop_reason_, fit_time_, device_, resumed_from_.
    """

    _log_name = "Spectral"
    _extra_curves = ("margin",)

    def __init__(self, n_components: int | None = None, *, gamma: float | str = 2.0, penalty: float = 0.1,
                 n_eigen: int = 1, eigen_weights: Sequence[float] | None = None, n_pairs: int = 2000,
                 n_epochs: int = 300, learning_rate: float = 1e-2, device: str = "auto", random_state=None,
                 callback: Callable[[int, float], object] | None = None, verbose: int = 0,
                 checkpoint=None, checkpoint_every: int | None = None):
        super().__init__(n_components, n_epochs=n_epochs, learning_rate=learning_rate, device=device,
                         random_state=random_state, callback=callback, verbose=verbose, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every)
        self.gamma, self.n_pairs = gamma, n_pairs
        self.penalty, self.n_eigen, self.eigen_weights = penalty, n_eigen, eigen_weights

    def _weights(self) -> np.ndarray:
        if self.eigen_weights is None:
            return np.ones(self.n_eigen)
        return np.asarray(self.eigen_weights, dtype=np.float64).ravel()

    def _validate_params(self, n_features: int | None = None) -> None:
        super()._validate_params(n_features)
        check_param(self.n_pairs, "n_pairs", "positive int")
        check_param(self.n_eigen, "n_eigen", "positive int")
        rank = self.n_components if n_features is None else min(n_features, self.n_components or n_features)
        if rank is not None and self.n_eigen > rank:
            raise ValueError(f"n_eigen ({self.n_eigen}) cannot be greater than the rank of W ({rank})")
        check_param(self.penalty, "penalty", "non-negative")
        w = self._weights()
        if len(w) != self.n_eigen:
            raise ValueError(f"eigen_weights must hold n_eigen ({self.n_eigen}) values, got {len(w)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"eigen_weights must be non-negative numbers, got {self.eigen_weights!r}")

    def _top_eigenvalues(self, G: torch.Tensor) -> torch.Tensor:
        """The ``n_eigen`` largest eigenvalues of ``W^T W``, differentiable in ``G``.

        They are those of the smaller ``G G^T`` (``r <= d``). With its top eigenvectors
        ``u_k`` found without autograd, ``lambda_k = ||G^T u_k||^2`` has the value and
        the gradient ``2 u_k u_k^T G`` of the eigenvalue (Hellmann-Feynman); at tied
        eigenvalues (the identity start) that is a subgradient. Cheaper than
        differentiating an SVD. NaN when the decomposition fails (a diverged ``G``)."""
        try:
            with torch.no_grad():
                _, V = torch.linalg.eigh(G @ G.T)
        except torch.linalg.LinAlgError:
            return torch.full((self.n_eigen,), float("nan"), device=G.device)
        U = V[:, -self.n_eigen:].flip(1)  # eigenvectors of the largest eigenvalues first
        return ((U.T @ G) ** 2).sum(1)

    def _setup(self, X, y, y_enc, G, rng) -> SimpleNamespace:
        dev, weights = G.device, self._weights()
        self.gamma_ = resolve_gamma(self.gamma, np.eye(*G.shape), X, y, random_state=rng.randint(0, 2**31 - 1))
        n_sim = self.n_pairs // 2
        if np.bincount(y_enc).max() < 2:
            n_sim = 0  # every class is a singleton: only dissimilar pairs exist
        pi, pj, yp = sample_pairs(X, y, n_sim, self.n_pairs - n_sim, random_state=rng)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        return SimpleNamespace(
            U=Xt[torch.as_tensor(pi, device=dev)] - Xt[torch.as_tensor(pj, device=dev)],
            Y=torch.as_tensor(yp, dtype=torch.float32, device=dev),
            alphas=torch.as_tensor(float(self.penalty) * weights, dtype=torch.float32, device=dev),
            use_penalty=bool(self.penalty > 0 and np.any(weights > 0)),
        )

    def _epoch(self, state, G, opt, epoch):
        Z = state.U @ G.T
        D = (Z * Z).sum(1)
        margin = torch.relu(1.0 + state.Y * (D - self.gamma_)).mean()
        loss = margin
        value = float(loss.detach())
        if state.use_penalty and math.isfinite(value):
            loss = loss + (state.alphas * self._top_eigenvalues(G)).sum()
            value = float(loss.detach())
        if math.isfinite(value):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finite = math.isfinite(value) and bool(torch.isfinite(G).all())
        return value, finite, {"margin": margin.detach()}

    def _finish(self, state) -> None:
        self.eigenvalues_ = np.sort(np.linalg.eigvalsh(metric_from_components(self.components_)))[::-1]
