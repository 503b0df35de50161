"""arml_core: adversarially robust Mahalanobis metric learning, certified and attacked.

The public API is re-exported here (``from arml_core import load_dataset, make_learner,
certified_radii, minimal_perturbations, attack``); the layers, from the bottom up, and
where each formula of ``ARML_NOTES.md`` lives are drawn in ``ARCHITECTURE.md``:

* ``metric`` (``M <-> G``, the triplet margin, robust-error curves), ``knn``, ``device``;
* ``data`` (sources, readers, built-ins, the paper's preprocessing);
* ``learners`` (Euclidean, NCA, LMNN, ITML, LFDA, ARML, the spectral defence; a registry);
* ``robustness`` (``certify``, ``exact``, ``attacks``) and ``pairwise``;
* ``evaluation`` (``evaluate``, ``reproduce``, ``summary``), ``persistence``;
* ``explore`` and ``plots`` (the app's computations and figures), ``cli``.

Names are imported lazily, so ``import arml_core`` stays cheap (no torch until needed).
"""
import importlib as _importlib
import os as _os

# OpenMP threads that spin while they wait make every small torch operation 10-100x
# slower as soon as another process competes for the cores (a 2-core laptop running
# the app and a browser, a CI runner). Sleeping waits cost almost nothing when the
# machine is idle. It only takes effect when set before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {
    "metric": ("check_metric", "components_from_metric", "metric_from_components", "robust_error_curve",
               "triplet_margin"),
    "knn": ("MahalanobisKNN", "check_n_neighbors"),
    "device": ("resolve_device", "device_label"),
    "data": ("Dataset", "load_dataset", "load_file", "list_datasets", "available_datasets", "download",
             "validate_for_k", "dataset_status", "BUILTIN_DATASETS", "FILE_DATASETS"),
    "limits": ("Limits", "estimate_fit_seconds"),
    "learners": ("make_learner", "LEARNERS", "ARML", "Euclidean", "SpectralDefence"),
    "robustness": ("certified_radii", "minimal_perturbations", "verify_perturbations", "attack", "make_attack",
                   "AttackResult", "RegionAttack", "BoundaryAttack", "HopSkipJumpAttack", "ConvergenceError",
                   "ExactKNNResult", "verify_knn_perturbations"),
    "evaluation": ("evaluate", "fit_metric", "parse_grid", "radii_for", "Evaluation"),
    "persistence": ("save_metric", "load_metric", "metric_to_bytes"),
    "pruning": ("adversarial_pruning", "PruningResult"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'arml_core' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
