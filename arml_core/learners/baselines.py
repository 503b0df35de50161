"""The baselines (ARML_NOTES section 6): Euclidean and the metric-learn learners.

metric-learn is imported lazily (it is slow to import): ``baseline_class(key)`` builds,
on first use, our subclass of metric-learn's NCA, LMNN, ITML_Supervised or LFDA. Each
checks its parameters (``PARAMETERS``: what metric-learn 0.7 accepts for each) and its
training data before metric-learn sees them, so that a bad value or a degenerate data
set is a ValueError that names the parameter or says what is wrong with the data, never
a traceback from inside metric-learn or a non-finite metric. The numbers are
metric-learn's own wherever it fits (see each class for what it changes).
``registry`` gives each its key and random state.
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_X_y, validate_data

from ._base import (MahalanobisMixin, _check_finite, _check_fit_data, check_param, check_random_state_param,
                    check_verbose)

LFDA_VARIANCE_CUTOFF = 1e-4


class Euclidean(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """The identity metric (``G = I``): the baseline every learner is compared with."""

    def _validate_params(self, n_features: int | None = None) -> None:
        pass  # no parameters

    def fit(self, X, y=None):
        _check_finite(X, "Euclidean", max_abs=np.inf)
        X = validate_data(self, X, dtype=np.float64)
        self.components_ = np.eye(X.shape[1])
        return self


class _Unfittable(ValueError):
    """Our own word on data a learner cannot fit (passed on as it is)."""


# -- parameter checks ----------------------------------------------------------------------
def _kind(kind: str, *, allow_none: bool = False):
    return lambda value, name: check_param(value, name, kind, allow_none=allow_none)


def _choice(*options: str, array: bool = False):
    """One of ``options`` or (with ``array``) a finite 2-D array of numbers."""
    def check(value, name):
        if isinstance(value, str) and value in options:
            return value
        if array and not isinstance(value, str) and value is not None:
            a = np.asarray(value)
            if a.ndim == 2 and a.dtype.kind in "iuf" and np.all(np.isfinite(a)):
                return value
        also = " or a 2-D array of numbers" if array else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}{also}, got {value!r}")

    return check


def _positive_or_inf(value, name):
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == math.inf:
        return value
    return check_param(value, name, "positive")


def _must_be(expected, why: str):
    def check(value, name):
        if not (value is expected or (isinstance(value, str) and value == expected)):
            raise ValueError(f"{name} must be left at {expected!r}: {why}")
        return value

    return check


_INIT = _choice("auto", "pca", "lda", "identity", "random", array=True)
_N_COMPONENTS = _kind("positive int", allow_none=True)
_COMMON = {
    "verbose": lambda v, name: check_verbose(v, name),
    "random_state": lambda v, name: check_random_state_param(v, name),
    "preprocessor": _must_be(None, "arml_core passes the data itself"),
}
_DEPRECATED = _must_be("deprecated", "it is a deprecated alias in metric-learn")

# key: what each parameter of metric-learn 0.7's learner accepts
PARAMETERS = {
    "nca": {"init": _INIT, "n_components": _N_COMPONENTS, "max_iter": _kind("positive int"), "tol": _kind("non-negative", allow_none=True),
            **_COMMON},
    "lmnn": {"init": _INIT, "n_neighbors": _kind("positive int"), "min_iter": _kind("non-negative int"),
             "max_iter": _kind("positive int"), "learn_rate": _kind("positive"),
             "regularization": _kind("fraction"), "convergence_tol": _kind("non-negative"), "k": _DEPRECATED,
             "n_components": _N_COMPONENTS, **_COMMON},
    "itml": {"gamma": _positive_or_inf, "max_iter": _kind("positive int"), "tol": _kind("non-negative"),
             "n_constraints": _kind("positive int", allow_none=True),
             "prior": _choice("identity", "covariance", "random", array=True),
             "num_constraints": _DEPRECATED, "convergence_threshold": _DEPRECATED, **_COMMON},
    "lfda": {"n_components": _N_COMPONENTS, "k": _kind("positive int", allow_none=True),
             "embedding_type": _choice("weighted", "orthonormalized", "plain"),
             "preprocessor": _COMMON["preprocessor"]},
}


class _Checked:
    """What the metric-learn subclasses share: the parameter checks (``PARAMETERS``),
    the data checks and the check that the metric found is finite. A subclass sets
    ``_key`` and ``_display`` and fits in ``_fit_checked``."""

    _key = ""
    _display = ""

    def _validate_params(self, n_features: int | None = None) -> None:
        for name, check in PARAMETERS[self._key].items():
            check(getattr(self, name), name)
        n_components = getattr(self, "n_components", None)
        if n_features is not None and n_components is not None and n_components > n_features:
            raise ValueError(f"n_components ({n_components}) cannot be greater than n_features ({n_features})")

    def _check_classes(self, y_enc: np.ndarray, classes: np.ndarray) -> None:
        pass

    def _non_finite(self, X) -> ValueError:
        return _Unfittable(
            f"{self._display} found no finite metric for this data (its features reach {np.abs(X).max():.3g}). "
            "Rescale the features, e.g. to [0, 1], drop constant or duplicated ones, and fit again."
        )

    def fit(self, X, y):
        _check_finite(X, self._display)
        X, y = check_X_y(X, y, ensure_min_samples=2, estimator=self._display)
        self._validate_params(X.shape[1])
        classes, y_enc = _check_fit_data(X, y, self._display)
        self._check_classes(y_enc, classes)
        try:
            self._fit_checked(X, y, y_enc)
        except _Unfittable:
            raise
        except (np.linalg.LinAlgError, ValueError) as exc:  # from inside metric-learn
            raise ValueError(f"{self._display} cannot be fitted on this data: {exc}") from None
        G = self.components_
        if np.iscomplexobj(G) or not np.all(np.isfinite(G)):
            raise self._non_finite(X)
        return self


def _lmnn(base):
    class LMNN(_Checked, base):
        """metric-learn's LMNN, with its data checked first: every class needs
        ``n_neighbors + 1`` points (metric-learn accepts ``n_neighbors``, and then a point
        becomes its own target neighbour)."""

        _key, _display = "lmnn", "LMNN"

        def _check_classes(self, y_enc, classes):
            counts = np.bincount(y_enc)
            small = int(np.argmin(counts))
            if counts[small] < self.n_neighbors + 1:
                raise ValueError(
                    f"LMNN needs at least n_neighbors + 1 = {self.n_neighbors + 1} points in every class (each "
                    f"point's target neighbours come from its own class), but class {classes[small]} has "
                    f"{counts[small]}; lower n_neighbors or drop that class."
                )

        def _fit_checked(self, X, y, y_enc):
            return base.fit(self, X, y)

    return LMNN


def _itml(base):
    from metric_learn.constraints import Constraints, wrap_pairs
    from metric_learn.itml import _BaseITML

    class ITML(_Checked, base):
        """metric-learn's ITML_Supervised, on labels encoded as ``0..n_classes-1``
        (metric-learn takes labels as integers and a negative one as "unlabelled": the
        -1 class of a LIBSVM file, or string labels, were lost or refused) and without
        the dissimilar pairs it cannot satisfy.

        metric-learn's "The input metric should be symmetric." means its matrix became
        NaN. That happens when a dissimilar pair joins two identical points (the same
        features under two labels: duplicated rows, or data whose features cannot tell
        the classes apart): ITML asks their distance to exceed a bound, which no metric
        can do, and its update divides by the zero distance. Those pairs are left out
        with a warning, and the rest are fitted exactly as metric-learn does (the same
        pairs, bounds and updates; data without such pairs gives metric-learn's numbers).
        Constant features and rank-deficient data are fine with the default identity
        prior; ``prior='covariance'`` needs a full-rank covariance and says so."""

        _key, _display = "itml", "ITML"

        def _fit_checked(self, X, y, y_enc):
            X, y_enc = self._prepare_inputs(X, y_enc, ensure_min_samples=2)
            n_constraints = self.n_constraints
            if n_constraints is None:
                n_constraints = 20 * len(np.unique(y_enc)) ** 2
            a, b, c, d = Constraints(y_enc).positive_negative_pairs(n_constraints, random_state=self.random_state)
            same = np.all(X[c] == X[d], axis=1)
            if same.all():
                raise _Unfittable(
                    "every dissimilar pair ITML drew joins two identical points with different labels, so no "
                    "metric can separate the classes; remove the duplicated points with conflicting labels."
                )
            if same.any():
                warnings.warn(
                    f"ITML: {int(same.sum())} of its {len(c)} dissimilar pairs join two identical points with "
                    "different labels, which no metric can separate; they are left out.", UserWarning,
                    stacklevel=4,
                )
                c, d = c[~same], d[~same]
            pairs, labels = wrap_pairs(X, (a, b, c, d))
            try:
                return _BaseITML._fit(self, pairs, labels)
            except ValueError as exc:
                if "should be symmetric" in str(exc):  # its matrix became non-finite
                    raise self._non_finite(X) from None
                raise

    return ITML


def _lfda(base):
    class LFDA(_Checked, base):
        """metric-learn's LFDA; where its solution is not finite, refitted in the
        principal subspace.

        LFDA solves a generalised eigenproblem with the within-class scatter, which is
        singular when some directions carry (almost) no variance (image data: constant
        border pixels); metric-learn then returns NaN or complex components. In that
        case only, directions whose variance is below ``LFDA_VARIANCE_CUTOFF`` times the
        largest are dropped (a PCA projection ``V``), LFDA is fitted on ``X V`` and the
        components are mapped back (``G = G_lfda V^T``); ``projected_rank_`` records
        the rank used (None: metric-learn's own solution). Where even that is not
        finite, ``fit`` raises ValueError."""

        _key, _display = "lfda", "LFDA"

        def __init__(self, n_components=None, k=None, embedding_type="weighted", preprocessor=None):
            # metric-learn's checks embedding_type here; ours, with the others, in fit
            self.n_components, self.k, self.embedding_type = n_components, k, embedding_type
            self.preprocessor = preprocessor

        def _fit_checked(self, X, y, y_enc):
            self.projected_rank_ = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # NaN from the singular case
                base.fit(self, X, y)
            G = self.components_
            if np.all(np.isfinite(G)) and not np.iscomplexobj(G):
                return self
            X = np.asarray(X, dtype=np.float64)
            s, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)[1:]
            r = int(np.sum(s**2 > LFDA_VARIANCE_CUTOFF * s[0] ** 2)) if s[0] > 0 else 0
            if r in (0, X.shape[1]):
                return self  # nothing to drop: fit reports the non-finite metric
            base.fit(self, X @ Vt[:r].T, y)
            self.components_ = np.real(self.components_) @ Vt[:r]
            self.n_features_in_ = X.shape[1]
            self.projected_rank_ = r
            return self

    return LFDA


def _nca(base):
    class NCA(_Checked, base):
        """metric-learn's NCA, with its parameters and data checked first."""

        _key, _display = "nca", "NCA"

        def _fit_checked(self, X, y, y_enc):
            return base.fit(self, X, y)

    return NCA


_BUILDERS = {"nca": ("NCA", _nca), "lmnn": ("LMNN", _lmnn), "itml": ("ITML_Supervised", _itml),
             "lfda": ("LFDA", _lfda)}


@functools.lru_cache(maxsize=None)
def baseline_class(key: str) -> type:
    """Our checked subclass of metric-learn's learner ``key`` ('nca', 'lmnn', 'itml',
    'lfda'), built (and metric-learn imported) on first use."""
    import metric_learn

    name, build = _BUILDERS[key]
    cls = build(getattr(metric_learn, name))
    cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return cls


def __getattr__(name: str):
    """``baselines.NCA`` (and LMNN, ITML, LFDA) by name, so that pickle finds the classes."""
    for key, (_, build) in _BUILDERS.items():
        if build.__name__[1:].upper() == name:
            return baseline_class(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
