"""Metric learners (scikit-learn estimators whose model is ``components_``).

``_base`` (the model mixin and the torch fit loop), ``_checkpoint`` (its checkpoints),
``baselines`` (Euclidean and the checked metric-learn learners), ``arml``, ``spectral``
(the pairwise defence), ``registry`` (the table behind ``make_learner`` and ``LEARNERS``)
and ``stoppable`` (``fit_in_subprocess``: a metric-learn fit another thread can stop).
"""
from ._base import MahalanobisMixin, _check_fit_data, _check_labels, _TorchLearner, check_param, mark_diverged  # noqa: F401
from ._checkpoint import CheckpointWarning  # noqa: F401
from .arml import ARML, LOSSES, _NeighbourIndex, triplet_eps  # noqa: F401
from .baselines import LFDA_VARIANCE_CUTOFF, PARAMETERS, Euclidean, baseline_class  # noqa: F401
from .registry import DEFAULT_RANDOM_STATE, LEARNERS, PALETTE, REGISTRY, display_name, make_learner  # noqa: F401
from .spectral import SpectralDefence  # noqa: F401
from .stoppable import FitStopped, fit_in_subprocess  # noqa: F401

__all__ = ["ARML", "LEARNERS", "Euclidean", "FitStopped", "MahalanobisMixin", "SpectralDefence", "fit_in_subprocess",
           "make_learner"]
