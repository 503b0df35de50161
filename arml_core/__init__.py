"""arml_core: adversarially robust Mahalanobis metric learning, certified and attacked.

Modules: ``data`` (data sets), ``learners`` (Euclidean, NCA, LMNN, ITML, LFDA, ARML,
the spectral defence), ``knn`` (Mahalanobis K-NN), ``certify`` (certified radii),
``exact`` (exact 1-NN radii), ``attacks`` (empirical attacks), ``pairwise`` (similarity
attacks), ``evaluate`` (robust-error curves and tables), ``io`` (saved metrics),
``explore`` and ``plots`` (the app's computations and plotly figures).
"""
import os as _os

# OpenMP threads that spin while they wait make every small torch operation 10-100x
# slower as soon as another process competes for the cores (a 2-core laptop running
# the app and a browser, a CI runner). Sleeping waits cost almost nothing when the
# machine is idle. It only takes effect when set before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
