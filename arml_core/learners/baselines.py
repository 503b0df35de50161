"""The baselines (ARML_NOTES section 6): Euclidean and the metric-learn learners.

metric-learn is imported lazily (it is slow to import): ``metric_learn_class(name)``
is the factory of NCA, LMNN and ITML_Supervised, ``lfda_class()`` that of LFDA with
its principal-subspace fallback. ``registry`` gives each its key and random state.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import validate_data

from ._base import MahalanobisMixin

LFDA_VARIANCE_CUTOFF = 1e-4


class Euclidean(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """The identity metric (``G = I``): the baseline every learner is compared with."""

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        self.components_ = np.eye(X.shape[1])
        return self


def metric_learn_class(name: str):
    """A factory (no arguments) of ``metric_learn.<name>``, importing metric-learn on call."""

    def load():
        import metric_learn

        return getattr(metric_learn, name)

    return load


@functools.lru_cache(maxsize=1)
def lfda_class():
    """metric-learn's LFDA with the principal-subspace fallback (built on first use)."""
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
