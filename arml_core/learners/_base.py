"""What every learner shares: the model ``components_`` and the torch fit loop.

Every learner is a scikit-learn estimator whose single model attribute is
``components_`` (``G``, shape ``(n_components, n_features)``); the Mahalanobis matrix
``M = G^T G`` and ``transform(X) = X G^T`` are derived from it (``MahalanobisMixin``),
as in metric-learn. The torch learners (ARML, the spectral defence) share one fit loop,
``_TorchLearner``: a subclass sets up its data and runs one epoch; the loop owns the
optimiser, the rollback to the last finite ``G``, progress and the fit attributes.
"""
from __future__ import annotations

import math
import numbers
import time
import warnings
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_is_fitted, validate_data

from ..device import resolve_device
from ..metric import metric_from_components


class MahalanobisMixin:
    """``get_mahalanobis_matrix`` / ``transform`` / ``get_metric`` from ``components_``."""

    def get_mahalanobis_matrix(self) -> np.ndarray:
        check_is_fitted(self, "components_")
        return metric_from_components(self.components_)

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


# kind: (type, lower bound, bound allowed, words of the message)
_PARAM_KINDS = {
    "positive int": (numbers.Integral, 1, True, "a positive integer"),
    "positive": (numbers.Real, 0, False, "a positive number"),
    "non-negative": (numbers.Real, 0, True, "a non-negative number"),
}


def check_param(value, name: str, kind: str, *, allow_none: bool = False):
    """``value`` if it is a finite scalar of ``kind`` (``'positive int'``, ``'positive'``,
    ``'non-negative'``; ``None`` too with ``allow_none``), else ValueError
    ``"<name> must be a positive integer, got <value>"``.

    ``sklearn.utils.check_scalar`` does the type and bound checks; its TypeError for a
    wrong type becomes the same ValueError, a bool is not a number here, and NaN or
    infinity are refused (``check_scalar`` lets them through)."""
    if allow_none and value is None:
        return None
    target, low, closed, words = _PARAM_KINDS[kind]
    try:
        if isinstance(value, bool):
            raise TypeError(name)
        check_scalar(value, name, target, min_val=low, include_boundaries="left" if closed else "neither")
        if not math.isfinite(value):
            raise ValueError(name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {words}, got {value!r}") from None
    return value


def mark_diverged(est, name: str, epoch: int) -> None:
    """Record (``converged_``, ``stop_reason_``) and warn that a torch learner's loss
    became non-finite at ``epoch``; the caller keeps the metric of the epoch before."""
    est.converged_ = False
    est.stop_reason_ = (
        f"the loss became non-finite at epoch {epoch}; the metric of epoch "
        f"{epoch - 1} is kept. Lower learning_rate (now {est.learning_rate})"
    )
    warnings.warn(f"{name} diverged: {est.stop_reason_}", ConvergenceWarning, stacklevel=3)


class _TorchLearner(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """Adam on ``G`` (``components_``, starting as the first rows of the identity), one
    epoch at a time, for a learner that implements

    * ``_setup(X, y, y_enc, G, rng) -> state``: its data on ``G.device`` and what it
      draws from ``rng`` (``check_random_state(random_state)``); ``y`` as given, ``y_enc``
      in ``0..n_classes-1``, ``G`` the initial components (not to be changed here).
      ``state`` is handed to every epoch;
    * ``_epoch(state, G, opt, epoch) -> (loss, finite, extras)``: one epoch of steps of
      ``opt`` on ``G``; ``loss`` a float, ``finite`` whether it and ``G`` are finite,
      ``extras`` a value (float or 0-d tensor) for each name of ``_extra_curves``;
    * optionally ``_validate_params(n_features)`` (calling this one), ``_finish(state)``
      (attributes from the final ``components_``), ``_extra_curves`` (recorded as
      ``<name>_curve_`` and shown by ``verbose``) and ``_log_name`` (the verbose tag).

    The loop keeps the last ``G`` whose epoch ended finite: a non-finite epoch restores
    it, warns (``ConvergenceWarning``) and stops. ``callback(epoch, loss)`` after every
    epoch (1-based); ``False`` stops training. ``verbose > 0`` prints a line every
    ``max(1, n_epochs // 10)`` epochs. Sets ``components_``, ``loss_curve_``,
    ``n_iter_``, ``converged_``, ``stop_reason_``, ``fit_time_`` and ``device_``.
    """

    _extra_curves: tuple[str, ...] = ()
    _log_name = ""

    def __init__(self, n_components: int | None = None, *, n_epochs: int, learning_rate: float,
                 device: str = "auto", random_state=None, callback: Callable[[int, float], object] | None = None,
                 verbose: int = 0):
        self.n_components = n_components
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.device = device
        self.random_state = random_state
        self.callback = callback
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _validate_params(self, n_features: int) -> None:
        check_param(self.n_epochs, "n_epochs", "positive int")
        check_param(self.n_components, "n_components", "positive int", allow_none=True)
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components ({self.n_components}) cannot be greater than n_features ({n_features})"
            )
        check_param(self.learning_rate, "learning_rate", "positive")

    def _setup(self, X, y, y_enc, G: torch.Tensor, rng) -> SimpleNamespace:
        raise NotImplementedError

    def _epoch(self, state, G: torch.Tensor, opt, epoch: int) -> tuple[float, bool, dict]:
        raise NotImplementedError

    def _finish(self, state) -> None:
        pass

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        self._validate_params(X.shape[1])
        _, y_enc = _check_labels(y)
        dev = resolve_device(self.device)
        self.device_ = str(dev)
        r, d = (X.shape[1] if self.n_components is None else self.n_components), X.shape[1]
        G = torch.eye(r, d, dtype=torch.float32, device=dev).requires_grad_(True)
        state = self._setup(X, y, y_enc, G, check_random_state(self.random_state))
        opt = torch.optim.Adam([G], lr=float(self.learning_rate))

        self.loss_curve_ = []
        for name in self._extra_curves:
            setattr(self, f"{name}_curve_", [])
        self.converged_ = True
        self.stop_reason_ = "completed"
        last_good = G.detach().clone()
        start = time.perf_counter()
        epoch = 0
        for epoch in range(1, self.n_epochs + 1):
            value, finite, extras = self._epoch(state, G, opt, epoch)
            if not finite:
                with torch.no_grad():
                    G.copy_(last_good)
                mark_diverged(self, type(self).__name__, epoch)
                epoch -= 1
                break
            last_good = G.detach().clone()
            self.loss_curve_.append(value)
            for name in self._extra_curves:
                getattr(self, f"{name}_curve_").append(float(extras[name]))
            if self.verbose and (epoch % max(1, self.n_epochs // 10) == 0 or epoch == 1):
                parts = "".join(f"{k} {getattr(self, f'{k}_curve_')[-1]:.6f}  " for k in self._extra_curves)
                print(f"[{self._log_name}] epoch {epoch:5d}/{self.n_epochs}  loss {value:.6f}  {parts}"
                      f"({time.perf_counter() - start:.1f} s)")
            if self.callback is not None and self.callback(epoch, value) is False:
                self.stop_reason_ = f"stopped by the callback at epoch {epoch}"
                break

        self.components_ = last_good.double().cpu().numpy()
        self.n_iter_ = epoch
        self._finish(state)
        self.fit_time_ = time.perf_counter() - start
        return self
