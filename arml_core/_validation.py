"""Input checks shared by the certifier, the exact solver and the attacks."""
from __future__ import annotations

import numpy as np


def check_train_test(X_train, y_train, X_test, y_test):
    """float64 2-D X arrays with matching widths, 1-D labels of matching lengths, a
    non-empty training set and finite values; ValueError with a readable message."""
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


def check_box(box, X_test):
    """``None`` or per-feature ``(lo, hi)`` arrays from a scalar or per-feature pair."""
    if box is None:
        return None
    try:
        lo, hi = box
    except (TypeError, ValueError):
        raise ValueError(f"box must be None or a pair (lo, hi), got {box!r}") from None
    D = X_test.shape[1]
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
    return lo, hi
