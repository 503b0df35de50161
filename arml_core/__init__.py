"""arml_core: adversarially robust Mahalanobis metric learning, certified and attacked.

Modules: ``data`` (data sets), ``learners`` (Euclidean, NCA, LMNN, ITML, LFDA, ARML),
``knn`` (Mahalanobis K-NN), ``certify`` (certified radii), ``exact`` (exact 1-NN
radii), ``evaluate`` (robust-error curves and tables), ``io`` (saved metrics),
``plots`` (plotly figures).
"""
__version__ = "0.1.0"
