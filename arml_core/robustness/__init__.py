"""Robustness of Mahalanobis K-NN: certified radii, exact minimal perturbations, attacks."""
from .attacks import ATTACKS, AttackResult, BoundaryAttack, HopSkipJumpAttack, RegionAttack, attack, make_attack
from .certify import certified_radii
from .exact import ConvergenceError, minimal_perturbations, verify_perturbations

__all__ = ["ATTACKS", "AttackResult", "BoundaryAttack", "ConvergenceError", "HopSkipJumpAttack", "RegionAttack",
           "attack", "certified_radii", "make_attack", "minimal_perturbations", "verify_perturbations"]
