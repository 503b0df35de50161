"""Metric learners (scikit-learn estimators whose model is ``components_``)."""
from ._all import *  # noqa: F401,F403
from ._all import (ARML, LEARNERS, Euclidean, MahalanobisMixin, _check_labels, _NeighbourIndex,  # noqa: F401
                   make_learner, mark_diverged, triplet_eps)
