"""Empirical attacks on Mahalanobis K-NN."""
from ._all import *  # noqa: F401,F403
from ._all import __all__, _Problem, _region_run, _RegionSolver  # noqa: F401
