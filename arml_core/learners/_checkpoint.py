"""Checkpoints of a torch learner's fit: what ``_TorchLearner`` needs to resume a fit
exactly where it stopped.

A checkpoint is one file written with ``torch.save`` of tensors, numbers, strings and
dicts of them only (never an arbitrary object), beside its final name and then renamed
onto it, so a reader sees the old file or the new one, never half of one. It is read
with ``torch.load(weights_only=True)``, which refuses anything but those types, after a
check of its size. It carries a fingerprint of the data, the parameters, the random
state and the torch version: a checkpoint of another fit is ignored with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
# parameters that do not change the numbers of a fit
_NEUTRAL = ("callback", "verbose", "checkpoint", "checkpoint_every")


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read, written or used; the fit goes on without it."""


def _digest(value) -> str:
    """A stable text for a parameter value (arrays by their bytes, not their repr)."""
    if isinstance(value, np.ndarray):
        return f"array{value.shape}{value.dtype}:{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_digest(v) for v in value) + "]"
    return repr(value)


def fingerprint(est, X: np.ndarray, y_enc: np.ndarray, classes: np.ndarray, rng_state, device: str) -> dict:
    """What must match for a checkpoint to be resumed: the learner, its parameters (less
    those that change no number), the random state before setup, the data, the device
    and the torch version."""
    data = hashlib.sha256()
    for a in (np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y_enc, dtype=np.int64)):
        data.update(repr(a.shape).encode())
        data.update(a.tobytes())
    data.update(repr([str(c) for c in classes]).encode())
    rng = hashlib.sha256(repr(rng_state[0]).encode() + np.asarray(rng_state[1]).tobytes()
                         + repr(tuple(rng_state[2:])).encode()).hexdigest()
    params = {k: _digest(v) for k, v in sorted(est.get_params(deep=False).items())
              if k not in _NEUTRAL and k != "random_state"}
    return {"learner": type(est).__name__, "params": json.dumps(params, sort_keys=True), "random_state": rng,
            "data": data.hexdigest(), "device": str(device), "torch": str(torch.__version__)}


class Checkpointer:
    """Reads, writes and removes the checkpoint at ``path`` of a fit with ``fingerprint``;
    a file larger than ``limit_bytes`` is not read."""

    def __init__(self, path, fingerprint: dict, limit_bytes: int):
        self.path = Path(os.fspath(path))
        self.fingerprint = fingerprint
        self.limit_bytes = int(limit_bytes)
        self._failed = False

    def _ignore(self, why: str) -> None:
        warnings.warn(f"checkpoint {self.path} ignored: {why}; the fit starts from epoch 0.",
                      CheckpointWarning, stacklevel=4)

    def load(self, device) -> dict | None:
        """The saved payload, or None (no file; or, with a warning, a file that cannot be
        read, is too large, or belongs to another fit)."""
        if not self.path.exists():
            return None
        try:
            size = self.path.stat().st_size
            if size > self.limit_bytes:
                self._ignore(f"it holds {size} bytes, more than a checkpoint of this fit can ({self.limit_bytes})")
                return None
            saved = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is ignored, whatever the cause
            self._ignore(f"it cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            return None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            self._ignore("it is not a checkpoint of this version of arml_core")
            return None
        theirs = saved.get("fingerprint")
        if not isinstance(theirs, dict):
            self._ignore("it has no fingerprint")
            return None
        differ = [k for k, v in self.fingerprint.items() if theirs.get(k) != v]
        if differ:
            self._ignore(f"it was written by a fit with another {', '.join(differ)}")
            return None
        return saved

    def save(self, epoch: int, G: torch.Tensor, opt, curves: dict, learner: dict) -> None:
        """Write the state after ``epoch`` atomically; a failure warns once and the fit
        continues without checkpoints."""
        if self._failed:
            return
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "epoch": int(epoch),
                   "G": G.detach(), "optimizer": opt.state_dict(),
                   "curves": {k: torch.tensor(v, dtype=torch.float64) for k, v in curves.items()},
                   "learner": learner}
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            self._failed = True
            warnings.warn(f"cannot write checkpoint {self.path} ({exc.strerror or exc}); the fit continues "
                          "without checkpoints.", CheckpointWarning, stacklevel=3)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(f"cannot remove checkpoint {self.path} ({exc.strerror or exc}).", CheckpointWarning,
                          stacklevel=3)


def check_tensor(value, name: str, shape: tuple, dtype: torch.dtype, *, high: int | None = None,
                 finite: bool = True) -> torch.Tensor:
    """``value`` if it is a tensor of ``shape`` and ``dtype`` (floats finite unless
    ``finite=False``, NaN never; integers in ``[0, high)``), else ValueError: how a saved
    tensor is checked before it is used."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        got = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} should be a {dtype} tensor of shape {tuple(shape)}, got {got}")
    if dtype.is_floating_point:
        if bool(torch.isnan(value).any()) or (finite and not bool(torch.isfinite(value).all())):
            raise ValueError(f"{name} is not finite")
    elif high is not None and value.numel() and (int(value.min()) < 0 or int(value.max()) >= high):
        raise ValueError(f"{name} holds indices outside [0, {high})")
    return value
