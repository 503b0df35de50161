"""Data sets: the paper's benchmarks, built-in toys and users' files, preprocessed as in the paper."""
from ._all import *  # noqa: F401,F403
from ._all import __all__, _LIBSVM_FILES, _REMOTE  # noqa: F401
