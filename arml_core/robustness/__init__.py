"""Robustness of Mahalanobis K-NN: certified radii, exact minimal perturbations, attacks."""
from .attacks import ATTACKS, AttackResult, BoundaryAttack, HopSkipJumpAttack, RegionAttack, attack, make_attack
from .certify import certified_radii
from .exact import ConvergenceError, minimal_perturbations, verify_perturbations
from .exact_knn import ExactKNNResult, verify_knn_perturbations

__all__ = ["ATTACKS", "AttackResult", "BoundaryAttack", "ConvergenceError", "ExactKNNResult", "HopSkipJumpAttack",
           "RegionAttack", "attack", "certified_radii", "make_attack", "minimal_perturbations", "verify_knn_perturbations",
           "verify_perturbations"]
