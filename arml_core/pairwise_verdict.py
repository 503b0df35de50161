"""What happened to each pair under :func:`arml_core.pairwise.pair_attack`, in words the
Pairwise attacks page can show (``ARML_NOTES.md`` section 8).

A pair with a label is *misjudged* when the decision ``D <= gamma`` already disagrees with
its label at zero perturbation (a similar pair farther than ``gamma``, a dissimilar one
closer): the attack "succeeds" on it at every budget without flipping anything, like a
misclassified point in the K-NN robust error (its certified pair radius is 0). Only a pair
judged right before the attack and wrong after it is *broken* by the attack.
"""
from __future__ import annotations

import numpy as np

from .pairwise import PairAttackResult, pair_distances

__all__ = ["MISJUDGED", "BROKEN", "HOLDS", "misjudged_pairs", "pair_verdicts"]

MISJUDGED, BROKEN, HOLDS = "misjudged", "broken", "holds"


def misjudged_pairs(W, X_i, X_j, gamma: float, y_pair) -> np.ndarray:
    """Per pair: does the decision ``D(x_i, x_j) <= gamma`` disagree with the label
    ``y_pair`` (``+1`` similar, ``-1`` dissimilar) with no perturbation at all?"""
    y = np.asarray(y_pair).ravel()
    if not np.all(np.isin(y, (-1, 1))):
        raise ValueError("y_pair must hold +1 (similar) or -1 (dissimilar) per pair")
    D = pair_distances(W, X_i, X_j)
    if len(D) != len(y):
        raise ValueError(f"y_pair has {len(y)} labels for {len(D)} pairs")
    return (D <= float(gamma)) != (y > 0)


def pair_verdicts(res: PairAttackResult) -> np.ndarray:
    """Per pair of ``res``: :data:`MISJUDGED` (wrong before the attack), :data:`BROKEN` (right
    before, wrong after: the attack flipped it) or :data:`HOLDS` (right after the attack)."""
    wrong_before = (res.dist_before <= res.gamma) != (res.target > 0)
    return np.where(wrong_before, MISJUDGED, np.where(res.success, BROKEN, HOLDS))
