"""Empirical adversarial attacks on Mahalanobis K-NN (``ARML_NOTES.md`` sections 2 and 7).

An attack returns, per test point, a verified adversarial point and its distance: an
*upper* bound on ``eps*``, beside the certified *lower* bound of :mod:`..certify`. One
entry point, settings separated from data (as foolbox does), one result type::

    res = attack(X_train, y_train, X_test, y_test, M, 11, method="region", box=(0, 1))
    res = attack(..., method="boundary", steps=2000)           # settings as keywords
    res = RegionAttack(n_candidates=8)(X_train, y_train, X_test, y_test, M, 11)

:mod:`.base` (the result, the base class and its pipeline), :mod:`.region` (white-box
region attack), :mod:`.foolbox` (Boundary and HopSkipJump).
"""
# the order of these imports is the order of ATTACKS (each class registers when defined)
from .base import ATTACKS, AttackResult, _Problem, attack, make_attack  # noqa: F401
from .region import RegionAttack, _region_run, _RegionSolver  # noqa: F401 (the tests use them)
from .foolbox import BoundaryAttack, HopSkipJumpAttack, KNNModule

__all__ = ["AttackResult", "RegionAttack", "BoundaryAttack", "HopSkipJumpAttack", "KNNModule", "ATTACKS",
           "attack", "make_attack"]
