"""Metric learners (scikit-learn estimators whose model is ``components_``).

``_base`` (the model mixin and the torch fit loop), ``baselines`` (Euclidean and the
metric-learn learners), ``arml``, ``spectral`` (the pairwise defence) and ``registry``
(the table behind ``make_learner`` and ``LEARNERS``).
"""
from ._base import MahalanobisMixin, _check_labels, _TorchLearner, check_param, mark_diverged  # noqa: F401
from .arml import ARML, LOSSES, _NeighbourIndex, triplet_eps  # noqa: F401
from .baselines import LFDA_VARIANCE_CUTOFF, Euclidean  # noqa: F401
from .registry import DEFAULT_RANDOM_STATE, LEARNERS, PALETTE, REGISTRY, display_name, make_learner  # noqa: F401
from .spectral import SpectralDefence  # noqa: F401

__all__ = ["ARML", "LEARNERS", "Euclidean", "MahalanobisMixin", "SpectralDefence", "make_learner"]
