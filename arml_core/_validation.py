"""Input checks shared by the certifier, the exact solver and the attacks.

One place for each check: the training/test data and the metric (:func:`check_data`),
a box ``(lo, hi)`` (:func:`check_box`), and scalar settings (:func:`check_integer`,
:func:`check_number`, :func:`check_choice`, on top of ``sklearn.utils.check_scalar``).
Every failure is a ``ValueError`` whose message names the argument and quotes its value.
``PointProgress`` is the progress callback of the per-point solvers.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
from sklearn.utils import check_scalar

from .metric import check_metric

PointProgress = Callable[[int, int], None]
"""``progress(done, total)``: called by the certifier, the exact solver and the attacks as
test points are finished (``done`` never decreases and ends at ``total``)."""

BOX_TOL = 1e-9  # relative tolerance of "x lies in the box"


def check_train_test(X_train, y_train, X_test, y_test):
    """float64 2-D X arrays with matching widths, 1-D labels of matching lengths, a
    non-empty training set and finite values (real: complex values are rejected, never
    truncated to their real part); ValueError with a readable message."""
    for name, arr in (("X_train", X_train), ("X_test", X_test)):
        _check_not_complex(name, arr)
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if X_train.ndim != 2 or X_test.ndim != 2:
        raise ValueError(
            f"X_train and X_test must be 2-D arrays (n_samples, n_features), got shapes "
            f"{X_train.shape} and {X_test.shape}"
        )
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"feature mismatch: X_train has {X_train.shape[1]} features but X_test has "
            f"{X_test.shape[1]}"
        )
    if y_train.ndim != 1 or len(X_train) != len(y_train):
        raise ValueError(
            f"shape mismatch: X_train has {len(X_train)} rows but y_train has shape {y_train.shape}"
        )
    if y_test.ndim != 1 or len(X_test) != len(y_test):
        raise ValueError(
            f"shape mismatch: X_test has {len(X_test)} rows but y_test has shape {y_test.shape}"
        )
    if len(X_train) == 0:
        raise ValueError("X_train is empty")
    for name, arr in (("X_train", X_train), ("X_test", X_test)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return X_train, y_train, X_test, y_test


def _check_not_complex(name, value) -> None:
    """ValueError for complex input (numpy would drop the imaginary part with a warning)."""
    if np.iscomplexobj(value) or isinstance(value, complex):
        raise ValueError(f"{name} contains complex values; pass real numbers")


def check_data(X_train, y_train, X_test, y_test, M):
    """:func:`check_train_test` and the metric: ``M = None`` is the Euclidean metric,
    anything else must pass :func:`~arml_core.metric.check_metric` for the data's width."""
    X_train, y_train, X_test, y_test = check_train_test(X_train, y_train, X_test, y_test)
    D = X_train.shape[1]
    M = np.eye(D) if M is None else check_metric(M, D)
    return X_train, y_train, X_test, y_test, M


def box_slack(X) -> float:
    """How far (absolute) a point of ``X`` may lie outside a box and still count as in it."""
    return BOX_TOL * max(1.0, float(np.abs(X).max()))


def check_box(box, X, *, inside=False):
    """``None`` or per-feature ``(lo, hi)`` arrays from a scalar or per-feature pair.

    With ``inside=True`` every row of ``X`` must lie in the box (up to :func:`box_slack`):
    an attack starts from a point of the domain."""
    if box is None:
        return None
    try:
        lo, hi = box
    except (TypeError, ValueError):
        raise ValueError(f"box must be None or a pair (lo, hi), got {box!r}") from None
    D = X.shape[1]
    _check_not_complex("box", lo)
    _check_not_complex("box", hi)
    try:
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (D,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (D,)).copy()
    except (TypeError, ValueError):
        raise ValueError(
            f"box bounds must be scalars or arrays of length {D} (the number of features)"
        ) from None
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError("box bounds contain NaN")
    if np.any(lo > hi):
        raise ValueError("box must satisfy lo <= hi in every coordinate")
    if np.any(lo == np.inf) or np.any(hi == -np.inf):
        raise ValueError("box bounds must satisfy lo < inf and hi > -inf")
    if inside and len(X):
        slack = box_slack(X)
        bad = np.flatnonzero(np.any((X < lo - slack) | (X > hi + slack), axis=1))
        if len(bad):
            raise ValueError(
                f"{len(bad)} test point(s) lie outside the box (first indices {bad[:5].tolist()}): "
                "an adversarial point must start from a point of the domain; clip X_test to the "
                "box (np.clip(X_test, lo, hi)) or widen the box"
            )
    return lo, hi


# --------------------------------------------------------------------------- scalar settings
def _scalar(name, value, kind, message, **bounds):
    """``sklearn.utils.check_scalar`` with this project's contract: ``bool`` is not a
    number, NaN is rejected, and every failure (check_scalar's TypeError included) is a
    ValueError with ``message``."""
    try:
        if isinstance(value, bool) or (isinstance(value, numbers.Real) and math.isnan(value)):
            raise TypeError(f"{name} is {value!r}, not a number")
        check_scalar(value, name, kind, **bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {message}, got {value!r}") from exc
    return value


def check_integer(name, value, minimum, *, allow_none=False):
    """An integer ``>= minimum`` (``None`` too with ``allow_none``); returned unchanged."""
    if value is None and allow_none:
        return None
    return _scalar(name, value, numbers.Integral,
                   f"an integer >= {minimum}{' or None' if allow_none else ''}", min_val=minimum)


def check_number(name, value, *, allow_zero=False):
    """A finite real number ``> 0`` (``>= 0`` with ``allow_zero``); returned unchanged."""
    return _scalar(name, value, numbers.Real,
                   f"a {'non-negative' if allow_zero else 'positive'} finite number",
                   min_val=0, max_val=math.inf, include_boundaries="left" if allow_zero else "neither")


def check_choice(name, value, choices):
    """One of ``choices`` (a tuple of strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}: {name} must be one of {tuple(choices)}")
    return value
