"""What every learner shares: the model ``components_`` and the torch fit loop.

Every learner is a scikit-learn estimator whose single model attribute is
``components_`` (``G``, shape ``(n_components, n_features)``); the Mahalanobis matrix
``M = G^T G`` and ``transform(X) = X G^T`` are derived from it (``MahalanobisMixin``),
as in metric-learn. The torch learners (ARML, the spectral defence) share one fit loop,
``_TorchLearner``: a subclass sets up its data and runs one epoch; the loop owns the
optimiser, the rollback to the last finite ``G``, progress, checkpoints (``_checkpoint``)
and the fit attributes.
"""
from __future__ import annotations

import math
import numbers
import os
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
from ._checkpoint import CheckpointWarning, Checkpointer, check_tensor, fingerprint


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


def _check_finite(X, name: str, max_abs: float = 1e100, precision: str = "float64") -> None:
    """A ValueError that says where, if ``X`` is numeric but holds NaN or infinity, or
    values beyond ``max_abs`` (their squared distances would overflow ``precision``);
    anything else is left to scikit-learn's validation."""
    try:
        A = np.asarray(X)
    except (TypeError, ValueError):
        return
    if A.ndim != 2 or A.size == 0 or A.dtype.kind not in "biuf":
        return
    bad = ~np.isfinite(A)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"X holds {int(bad.sum())} NaN or infinite value(s), the first in row {i}, column {j}; "
                         f"{name} needs finite features: remove or impute them before fitting.")
    top = float(np.abs(A).max())
    if top > max_abs:
        raise ValueError(f"X holds values as large as {top:.3g}, whose squared distances overflow {name}'s "
                         f"{precision} arithmetic; rescale the features, e.g. to [0, 1], and fit again.")


def _check_fit_data(X: np.ndarray, y, name: str, *, need_pair: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(classes, encoded labels) of a training set a metric can be learned from, else a
    ValueError that says what is wrong with it: fewer than two classes
    (``_check_labels``), every class a single point (with ``need_pair``: the learner needs
    same-class pairs), or every point the same (each feature constant). ``X`` is finite
    and 2-D (validated before)."""
    classes, y_enc = _check_labels(y)
    if need_pair and np.bincount(y_enc).max() < 2:
        raise ValueError(f"{name} needs a class with at least two points, but each of the {len(classes)} "
                         "classes has a single point; give it more points per class.")
    if len(X) and float(np.ptp(X, axis=0).max()) == 0.0:
        raise ValueError(f"all {len(X)} training points are identical (every feature is constant), so {name} "
                         "has nothing to learn a metric from; check the data.")
    return classes, y_enc


# kind: (type, lower bound, lower bound allowed, upper bound (allowed), words of the message)
_PARAM_KINDS = {
    "positive int": (numbers.Integral, 1, True, None, "a positive integer"),
    "non-negative int": (numbers.Integral, 0, True, None, "a non-negative integer"),
    "positive": (numbers.Real, 0, False, None, "a positive number"),
    "non-negative": (numbers.Real, 0, True, None, "a non-negative number"),
    "fraction": (numbers.Real, 0, True, 1, "a number between 0 and 1"),
}


def check_param(value, name: str, kind: str, *, allow_none: bool = False):
    """``value`` if it is a finite scalar of ``kind`` (``'positive int'``,
    ``'non-negative int'``, ``'positive'``, ``'non-negative'``, ``'fraction'`` (in [0, 1]);
    ``None`` too with ``allow_none``), else ValueError
    ``"<name> must be a positive integer, got <value>"``.

    ``sklearn.utils.check_scalar`` does the type and bound checks; its TypeError for a
    wrong type becomes the same ValueError, a bool is not a number here, and NaN or
    infinity are refused (``check_scalar`` lets them through)."""
    if allow_none and value is None:
        return None
    target, low, closed, high, words = _PARAM_KINDS[kind]
    try:
        if isinstance(value, bool):
            raise TypeError(name)
        bounds = ("left" if high is None else "both") if closed else "neither"
        check_scalar(value, name, target, min_val=low, max_val=high, include_boundaries=bounds)
        if not math.isfinite(value):
            raise ValueError(name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {words}, got {value!r}") from None
    return value


def check_random_state_param(value, name: str = "random_state"):
    """``value`` if ``check_random_state`` accepts it (None, an integer in
    ``[0, 2**32 - 1]`` or a ``numpy.random.RandomState``), else ValueError."""
    if value is None or isinstance(value, np.random.RandomState):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < 2**32:
        return value
    raise ValueError(f"{name} must be None, an integer in [0, 2**32 - 1] or a numpy RandomState, got {value!r}")


def check_verbose(value, name: str = "verbose"):
    """``value`` if it is a bool or a non-negative integer, else ValueError."""
    return value if isinstance(value, bool) else check_param(value, name, "non-negative int")


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
    * optionally ``_validate_params(n_features)`` (calling this one; ``n_features`` None
      checks what does not depend on the data), ``_finish(state)`` (attributes from the
      final ``components_``), ``_extra_curves`` (recorded as ``<name>_curve_`` and shown
      by ``verbose``), ``_log_name`` (the verbose tag), and, where ``state`` changes from
      epoch to epoch (a random generator, a cache), ``_state_dict(state)`` /
      ``_load_state_dict(state, saved)`` (tensors, numbers and None only; the load checks
      what it reads and raises ValueError on anything wrong) and ``_state_bytes(n, d)``.

    The loop keeps the last ``G`` whose epoch ended finite: a non-finite epoch restores
    it, warns (``ConvergenceWarning``) and stops. ``callback(epoch, loss)`` after every
    epoch (1-based); ``False`` stops training. ``verbose > 0`` prints a line every
    ``max(1, n_epochs // 10)`` epochs. Sets ``components_``, ``loss_curve_``,
    ``n_iter_``, ``converged_``, ``stop_reason_``, ``fit_time_`` (of this call),
    ``device_`` and ``resumed_from_`` (the epoch a checkpoint resumed, 0 if none).

    Checkpoints: with ``checkpoint=<path>``, the state after every ``checkpoint_every``
    epochs (default 10) and after the callback stops the fit is saved there (``G``,
    Adam's moments and step, the epoch, the loss curves and the learner's ``state``, its
    random generator included); a later ``fit`` with the same data, parameters (all but
    ``callback``, ``verbose`` and the checkpoint's) and random state resumes after that
    epoch and ends with the same ``components_`` and curves, bit for bit, as a fit never
    interrupted. A checkpoint of another fit, or one that cannot be read, is ignored with a
    ``CheckpointWarning``. The file is removed when the fit ends (all epochs run, or
    divergence) and kept when the callback stops it. It is read with
    ``torch.load(weights_only=True)``: it cannot run code, but its numbers are trusted
    once their shapes and ranges check, so keep checkpoints where only you write.
    """

    _extra_curves: tuple[str, ...] = ()
    _log_name = ""
    _default_checkpoint_every = 10

    def __init__(self, n_components: int | None = None, *, n_epochs: int, learning_rate: float,
                 device: str = "auto", random_state=None, callback: Callable[[int, float], object] | None = None,
                 verbose: int = 0, checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None):
        self.n_components = n_components
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.device = device
        self.random_state = random_state
        self.callback = callback
        self.verbose = verbose
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _validate_params(self, n_features: int | None = None) -> None:
        check_param(self.n_epochs, "n_epochs", "positive int")
        check_param(self.n_components, "n_components", "positive int", allow_none=True)
        if n_features is not None and self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components ({self.n_components}) cannot be greater than n_features ({n_features})"
            )
        check_param(self.learning_rate, "learning_rate", "positive")
        check_random_state_param(self.random_state)
        check_verbose(self.verbose)
        if self.callback is not None and not callable(self.callback):
            raise ValueError(f"callback must be a function callback(epoch, loss) or None, got {self.callback!r}")
        check_param(self.checkpoint_every, "checkpoint_every", "positive int", allow_none=True)
        if self.checkpoint is None:
            if self.checkpoint_every is not None:
                raise ValueError("checkpoint_every is set but checkpoint is None; give checkpoint=<path> too.")
        elif not isinstance(self.checkpoint, (str, os.PathLike)) or os.path.isdir(self.checkpoint):
            raise ValueError(f"checkpoint must be the path of a file (or None), got {self.checkpoint!r}")
        elif not os.path.isdir(os.path.dirname(os.path.abspath(self.checkpoint))):
            raise ValueError(f"the folder of checkpoint {self.checkpoint!r} does not exist; create it first.")

    def _setup(self, X, y, y_enc, G: torch.Tensor, rng) -> SimpleNamespace:
        raise NotImplementedError

    def _epoch(self, state, G: torch.Tensor, opt, epoch: int) -> tuple[float, bool, dict]:
        raise NotImplementedError

    def _finish(self, state) -> None:
        pass

    def _state_dict(self, state) -> dict:
        return {}

    def _load_state_dict(self, state, saved: dict) -> None:
        pass

    def _state_bytes(self, n: int, d: int) -> int:
        return 0

    def _start(self, X, y, y_enc, dev, rng):
        r, d = (X.shape[1] if self.n_components is None else self.n_components), X.shape[1]
        G = torch.eye(r, d, dtype=torch.float32, device=dev).requires_grad_(True)
        state = self._setup(X, y, y_enc, G, rng)
        opt = torch.optim.Adam([G], lr=float(self.learning_rate))
        self.loss_curve_ = []
        for name in self._extra_curves:
            setattr(self, f"{name}_curve_", [])
        return G, state, opt

    def _resume(self, saved: dict, G, state, opt) -> int:
        """Restore a checkpoint's state into the fresh ``G``, ``state`` and ``opt``; the
        epoch it was taken after. ValueError (or a torch error) on anything inconsistent."""
        epoch = saved["epoch"]
        if not isinstance(epoch, int) or not 1 <= epoch <= self.n_epochs:
            raise ValueError(f"its epoch {epoch!r} is not in 1..n_epochs ({self.n_epochs})")
        G_saved = check_tensor(saved["G"], "G", G.shape, G.dtype)
        moments = saved["optimizer"]["state"][0]
        for key in ("exp_avg", "exp_avg_sq"):
            check_tensor(moments[key], f"Adam's {key}", G.shape, G.dtype)
        curves = {}
        for name in ("loss",) + self._extra_curves:
            curves[name] = check_tensor(saved["curves"][name], f"the {name} curve", (epoch,), torch.float64).tolist()
        self._load_state_dict(state, saved["learner"])
        opt.load_state_dict(saved["optimizer"])
        with torch.no_grad():
            G.copy_(G_saved)
        self.loss_curve_ = curves["loss"]
        for name in self._extra_curves:
            setattr(self, f"{name}_curve_", curves[name])
        return epoch

    def _curves(self) -> dict:
        return {"loss": self.loss_curve_, **{k: getattr(self, f"{k}_curve_") for k in self._extra_curves}}

    def fit(self, X, y):
        _check_finite(X, type(self).__name__, max_abs=1e15, precision="float32")
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        self._validate_params(X.shape[1])
        classes, y_enc = _check_fit_data(X, y, type(self).__name__, need_pair=False)
        dev = resolve_device(self.device)
        self.device_ = str(dev)
        rng = check_random_state(self.random_state)
        rng_state = rng.get_state()
        G, state, opt = self._start(X, y, y_enc, dev, rng)
        first = 0
        ckpt = None
        if self.checkpoint is not None:
            n, d = X.shape
            limit = 2**20 + 2 * (16 * G.numel() + 8 * (1 + len(self._extra_curves)) * self.n_epochs
                                 + self._state_bytes(n, d))
            ckpt = Checkpointer(self.checkpoint, fingerprint(self, X, y_enc, classes, rng_state, self.device_), limit)
            saved = ckpt.load(dev)
            if saved is not None:
                try:
                    first = self._resume(saved, G, state, opt)
                except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
                    warnings.warn(f"checkpoint {self.checkpoint} ignored: {exc}; the fit starts from epoch 0.",
                                  CheckpointWarning, stacklevel=2)
                    rng.set_state(rng_state)
                    G, state, opt = self._start(X, y, y_enc, dev, rng)
        every = self.checkpoint_every or self._default_checkpoint_every
        self.resumed_from_ = first

        self.converged_ = True
        self.stop_reason_ = "completed"
        last_good = G.detach().clone()
        start = time.perf_counter()
        epoch = first
        for epoch in range(first + 1, self.n_epochs + 1):
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
            stop = self.callback is not None and self.callback(epoch, value) is False
            if ckpt is not None and (stop or (epoch % every == 0 and epoch < self.n_epochs)):
                ckpt.save(epoch, G, opt, self._curves(), self._state_dict(state))
            if stop:
                self.stop_reason_ = f"stopped by the callback at epoch {epoch}"
                break
        if ckpt is not None and not self.stop_reason_.startswith("stopped"):
            ckpt.remove()

        self.components_ = last_good.double().cpu().numpy()
        self.n_iter_ = epoch
        self._finish(state)
        self.fit_time_ = time.perf_counter() - start
        return self
