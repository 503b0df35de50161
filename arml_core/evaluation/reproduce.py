"""Redo the ARML paper's evaluation (ARML_NOTES section 9) from raw data.

Six data sets x six methods: the 1-NN table (exact robust error), and the K = 11 tables
(certified lower bound, and empirical by the region attack). Everything expensive is
cached under ``runs/``: learned metrics (keyed by data set, method and fit settings)
and every evaluation stage (keyed by the metric and the stage settings), each written
as soon as it is computed, so a rerun only computes what is missing and an interrupted
run resumes where it stopped.

Outputs, per data set ``results/<dataset>/``:

* ``metrics_meta.json``: the plan (training sizes, parameters, deviations from the
  protocol), per method the fit (time, settings, cache key, warnings), clean errors,
  stage wall times, the device, and the soundness checks;
* ``nn1_exact.csv``, ``knn11_certified.csv``, ``knn11_empirical.csv``: tidy tables
  (method, radius, robust error in %, number of points);
* ``radii.csv``: the per-point radii behind them (the app draws curves from it);

and ``results/SUMMARY.md`` over every data set present. A narrower rerun (fewer methods or
stages) merges into the folder: what it did not recompute stays as it was, and the folder is
replaced atomically (:mod:`arml_core.evaluation.results_folder`). The plan itself (profiles,
subsamples, deviations) is :mod:`arml_core.evaluation.plan`. Beyond the paper's protocol, on
request (``defence='pruning'``), every method is also evaluated on its adversarially pruned
training set.

Soundness checks (any failure is a bug, and the command exits non-zero):

* 1-NN: every exact minimal perturbation is verified against the real classifier
  (``exact.verify_perturbations``: flips at ``(1 + 1e-4) delta``, not at
  ``(1 - 1e-4) delta``), so the exact radius is at once certified (no smaller flip
  exists, by the QP) and empirical (the delta is an adversarial example); the
  closed-form bound for K = 1 must not exceed it.
* K = 11: the certified radius must not exceed the attack's norm at any attacked point,
  so the certified robust error is at least the empirical one at every radius.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import Dataset, load_dataset
from ..device import resolve_device
from ..learners import LEARNERS
from ..limits import DEFAULT_LIMITS
from ..metric import metric_from_components, robust_error_curve
from ..persistence import LOAD_ERRORS, cached_metric, read_npz, run_key, store_metric
from .evaluate import StageProgress, fit_metric, misclassified
from .plan import (CPU_FIT_N_TRAIN, CPU_N_ATTACK, CPU_REFERENCE_N_TRAIN, DEFENCES, GRID_STEP, N_TEST,  # noqa: F401
                   PAPER_METHODS, PROFILES, PRUNING_STEPS, SEED, STAGES, Plan, _fit_settings, fit_settings,
                   make_plan, paper_grid)
from .results_folder import LAYOUT, RunOutput, save_results
from .summary import K_PAPER, PAPER_DATASETS  # noqa: F401 - the CLI reads them here

RADIUS_TOL = 1e-6  # relative slack of the soundness checks (float64 round-off)
# Bump when a change to the solvers could change a cached stage's numbers: every stage
# file records it (with fingerprints of its data and metric) and is recomputed on a mismatch.
STAGE_VERSION = 2


# --------------------------------------------------------------------------- caching


def _stage_path(runs_dir: Path, metric_key: str, stage: str, settings: dict) -> Path:
    blob = json.dumps({"metric": metric_key, "stage": stage, **settings}, sort_keys=True)
    return runs_dir / f"{metric_key}__{stage}__{hashlib.sha256(blob.encode()).hexdigest()[:10]}.npz"


def fingerprint(*arrays) -> str:
    """A short content hash of arrays (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _stage_member(name: str, shape: tuple, dtype: np.dtype) -> None:
    """A stage file holds scalars and 1-D arrays of numbers, booleans or short text (checked
    from the ``.npy`` header, before anything is read)."""
    if dtype.fields is not None or dtype.kind not in "biufU" or len(shape) > 1 or \
            (shape and shape[0] > DEFAULT_LIMITS.max_dense_entries) or (dtype.kind == "U" and dtype.itemsize > 4000):
        raise ValueError(f"{name} is a {dtype} array of shape {shape}, not a stage result")


def _valid_stage(arrays: dict, stamp: dict, expect: dict | None) -> bool:
    """Whether a stage file's arrays carry ``stamp`` and hold what ``expect`` describes
    (name -> (length, dtype kinds), length None for a scalar, -1 for any length)."""
    if any(str(arrays.get(k, "")) != v for k, v in stamp.items()):
        return False
    secs = arrays.get("_seconds")
    if secs is None or secs.shape != () or secs.dtype.kind not in "fiu" or not 0 <= float(secs) < np.inf:
        return False
    for name, (length, kinds) in (expect or {}).items():
        a = arrays.get(name)
        if a is None or a.dtype.kind not in kinds or \
                (a.shape != () if length is None else (a.ndim != 1 or length not in (-1, len(a)))):
            return False
    return True


def _cached_stage(path: Path, compute: Callable[[], dict], stamp: dict | None = None,
                  expect: dict | None = None) -> tuple[dict, float, bool]:
    """(arrays, seconds it took when computed, whether it came from the cache).

    ``stamp`` (strings: the stage version, fingerprints of the data and the metric) is
    stored with the arrays; a file whose stamp differs, whose arrays are not those ``expect``
    describes (:func:`_valid_stage`), or that cannot be read is recomputed. The file is read
    with :func:`arml_core.persistence.read_npz` (headers checked first, nothing unpickled)."""
    stamp = {f"_stamp_{k}": str(v) for k, v in (stamp or {}).items()}
    if path.exists():
        try:
            arrays = read_npz(path, _stage_member, limits=DEFAULT_LIMITS, max_members=32)
            if _valid_stage(arrays, stamp, expect):
                for k in stamp:
                    arrays.pop(k)
                return arrays, float(arrays.pop("_seconds")), True
        except LOAD_ERRORS:  # truncated, empty or foreign file: recompute it
            pass
    t0 = time.perf_counter()
    arrays = compute()
    seconds = time.perf_counter() - t0
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, _seconds=np.float64(seconds), **arrays, **{k: np.str_(v) for k, v in stamp.items()})
    tmp.replace(path)
    return arrays, seconds, False


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """The same data set with a stratified subsample of its (already scaled) training set."""
    if n is None or n >= len(ds.y_train):
        return ds
    from sklearn.model_selection import train_test_split

    X, _, y, _ = train_test_split(ds.X_train, ds.y_train, train_size=int(n), stratify=ds.y_train,
                                  random_state=seed)
    return replace(ds, X_train=X, y_train=y, subsampled=True)


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """One data set's run: the data, the plan and what the stages have produced so far."""

    dataset: str
    plan: Plan
    ds: Dataset
    runs_dir: Path
    device: str
    say: StageProgress
    eval_settings: dict
    data_sha: str
    n_attack: int
    meta: dict
    per_point: dict
    rows: dict = field(default_factory=lambda: {"nn1": [], "knn11": [], "attack": []})
    done: dict = field(default_factory=dict)  # method -> the stages it computed (or loaded) in this run

    @property
    def K(self) -> int:
        return self.plan.n_neighbors

    @property
    def grid(self) -> np.ndarray:
        return np.asarray(self.plan.grid, dtype=float)

    def failure(self, method: str, message: str) -> None:
        self.meta["methods"][method].setdefault("failures", []).append(f"{LEARNERS.get(method, method)}: {message}")

    def failed(self, method: str, what: str, exc: Exception) -> None:
        self.failure(method, f"{what} failed ({type(exc).__name__}: {exc})")
        self.meta["methods"][method].setdefault("errors", []).append(f"{what}: {exc}")
        self.say(f"{self.dataset}/{method}", 1.0, f"{what} FAILED: {exc}")


@dataclass
class _Method:
    """One method within a run: its metric, the clean errors and its stage records."""

    name: str
    key: str
    M: np.ndarray
    stamp: dict
    clean: dict  # k -> misclassified mask
    meta: dict


_STAGE_ERRORS = (ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError)


def _cached_fit(run: _Run, method: str, settings: dict, m_meta: dict):
    """``persistence.cached_metric``, its warnings (a corrupt or foreign file: recomputed)
    passed on, told to the progress and kept in the method's metadata."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hit = cached_metric(run.runs_dir, run.dataset, method, settings, run.ds.n_features)
    for w in caught:
        warnings.warn(str(w.message), w.category, stacklevel=3)
        m_meta.setdefault("cache_warnings", []).append(str(w.message))
        run.say(f"{run.dataset}/{method}", 0.0, str(w.message))
    return hit


def _fit_stage(run: _Run, method: str) -> _Method | None:
    """The learned metric of ``method``: from the cache when it was fitted on the same
    data, else fitted and stored. None (a failure recorded) when it cannot be had."""
    plan, ds, dataset = run.plan, run.ds, run.dataset
    m_meta = run.meta["methods"].setdefault(method, {"stage_s": {}, "cached": {}})
    settings = _fit_settings(plan, method)
    key = run_key(dataset, method, settings)
    fit_ds = _subsample(ds, plan.fit_n_train.get(method), plan.seed)
    fit_sha = fingerprint(fit_ds.X_train, fit_ds.y_train)
    hit = _cached_fit(run, method, settings, m_meta)
    if hit is not None and hit[1].get("info", {}).get("data_fingerprint") != fit_sha:
        run.say(f"{dataset}/{method}", 0.0, "the cached metric was fitted on other data: refitting")
        hit = None
    if hit is None:
        if "fit" not in plan.stages:
            run.failure(method, "no cached metric, and the fit stage was not requested")
            return None
        run.say(f"{dataset}/{method}", 0.0, f"fitting on {len(fit_ds.y_train)} points")
        try:
            G, fit_s, info = fit_metric(fit_ds, method, params=plan.params.get(method), device=run.device,
                                        progress=run.say)
        except _STAGE_ERRORS as exc:  # one method, not the run
            run.failed(method, "fit", exc)
            return None
        info = {k: v for k, v in info.items() if k != "loss_curve"}
        info["data_fingerprint"] = fit_sha
        try:
            store_metric(run.runs_dir, dataset, method, settings, G, fit_s, info)
        except (ValueError, OSError) as exc:  # e.g. a foreign .json where the cache file goes: not cached
            warnings.warn(f"{dataset}/{method}: the fitted metric could not be cached ({exc})", stacklevel=2)
            m_meta.setdefault("cache_warnings", []).append(f"not cached: {exc}")
        m_meta["cached"]["fit"] = False
    else:
        G, saved = hit
        fit_s, info = float(saved.get("fit_time_s") or 0.0), saved.get("info", {})
        m_meta["cached"]["fit"] = True
    m_meta.update(fit_key=key, fit_settings=settings, fit_n_train=int(len(fit_ds.y_train)),
                  fit_info=info, rank=int(np.linalg.matrix_rank(G)))
    m_meta["stage_s"]["fit"] = fit_s
    M = metric_from_components(G)
    stamp = {"version": STAGE_VERSION, "data": run.data_sha, "metric": fingerprint(G)}
    clean = _clean_errors(run, ds, M, m_meta)
    m_meta["fingerprints"] = {"metric": stamp["metric"], "data": run.data_sha}  # what the rows describe
    return _Method(method, key, M, stamp, clean, m_meta)


def _clean_errors(run: _Run, ds: Dataset, M: np.ndarray, meta: dict) -> dict:
    """K -> misclassified mask of the test points, for K = 1 and the plan's K (rates in ``meta``)."""
    clean = {k: misclassified(ds, M, k, device=run.device) for k in (1, run.K)}
    meta["clean_error"] = {"1": float(clean[1].mean()), str(run.K): float(clean[run.K].mean())}
    return clean


_PRUNING_FIELDS = ("exact", "solver", "lower_bound", "n_conflicts")  # of PruningResult, kept in the metadata


def _pruned_stage(run: _Run, m: _Method) -> list[tuple[_Run, _Method]]:
    """Beyond the paper: ``m`` again, as '<name>+pruning', on the training set adversarially
    pruned at the plan's radius under ``m``'s metric (the kept indices cached like a stage),
    with a run whose data is the pruned set. [] without pruning, or when it failed."""
    r = run.plan.pruning_radius
    if r is None:
        return []
    from ..pruning import adversarial_pruning

    name = f"{m.name}+pruning"
    meta = run.meta["methods"].setdefault(name, {"stage_s": {}, "cached": {}, "pruned_from": m.name})
    n_train = len(run.ds.y_train)

    def compute() -> dict:
        res = adversarial_pruning(run.ds.X_train, run.ds.y_train, m.M, r, device=run.device, return_result=True)
        return {"kept": res.kept, **{k: np.asarray(getattr(res, k)) for k in _PRUNING_FIELDS}}

    path = _stage_path(run.runs_dir, m.key, "pruning", {**run.eval_settings, "radius": r})
    expect = {"kept": (-1, "iu"), **{k: (None, "biufU") for k in _PRUNING_FIELDS}}
    try:
        a, secs, cached = _cached_stage(path, compute, m.stamp, expect)
        kept = a["kept"]
        if len(kept) and (kept.min() < 0 or kept.max() >= n_train or len(np.unique(kept)) != len(kept)):
            raise ValueError(f"the cached pruning {path.name} lists indices outside the training set; delete it")
        ds = replace(run.ds, X_train=run.ds.X_train[kept], y_train=run.ds.y_train[kept], subsampled=True)
        clean = _clean_errors(run, ds, m.M, meta)  # ValueError when a class keeps fewer than K points
    except _STAGE_ERRORS as exc:
        run.failed(name, "adversarial pruning", exc)
        return []
    meta["stage_s"]["pruning"], meta["cached"]["pruning"] = secs, cached
    meta["pruning"] = {"radius": r, "n_kept": int(len(kept)), "n_train": int(n_train),
                       **{k: a[k].item() for k in _PRUNING_FIELDS}}
    pruned = replace(run, ds=ds, data_sha=fingerprint(ds.X_train, ds.y_train, ds.X_test, ds.y_test))
    meta["fingerprints"] = {"metric": m.stamp["metric"], "data": pruned.data_sha}
    return [(pruned, _Method(name, f"{m.key}__pruned{r:g}", m.M, {**m.stamp, "data": pruned.data_sha}, clean, meta))]


# -- the evaluation stages: compute (cached under runs/), then check and record ------------------
def _nn1_compute(run: _Run, m: _Method) -> dict:
    from ..robustness.certify import certified_radii
    from ..robustness.exact import minimal_perturbations, verify_perturbations

    ds = run.ds
    run.say(f"{run.dataset}/{m.name}", 0.0, "exact 1-NN radii")
    norms, deltas = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, m.M, device=run.device)
    ok = verify_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, m.M, norms, deltas, device=run.device)
    bound = certified_radii(ds.X_train, ds.y_train, ds.X_test, ds.y_test, m.M, 1, device=run.device)
    return {"exact": norms, "verified": ok, "bound": bound}


def _nn1_record(run: _Run, m: _Method, a: dict) -> None:
    """The rows, radii and checks (a violation: ``results_folder.violation_messages``)."""
    exact, bound = a["exact"], a["bound"]
    n_bad = int((~a["verified"]).sum())
    n_above = int(np.sum(bound > exact * (1 + RADIUS_TOL) + 1e-12))
    run.meta["checks"][f"{m.name}/nn1"] = {"unverified_perturbations": n_bad, "bound_above_exact": n_above}
    m.meta["nn1_ties"] = int(np.sum(~m.clean[1] & (exact == 0)))
    run.per_point[f"{m.name}.nn1_exact"] = exact
    run.per_point[f"{m.name}.nn1_bound"] = bound
    run.rows["nn1"] += _rows(m.name, run.grid, exact, "exact")


def _certify_compute(run: _Run, m: _Method) -> dict:
    from ..robustness.certify import certified_radii

    ds = run.ds
    run.say(f"{run.dataset}/{m.name}", 0.0, f"certifying {run.K}-NN")
    return {"radii": certified_radii(ds.X_train, ds.y_train, ds.X_test, ds.y_test, m.M, run.K, device=run.device)}


def _certify_record(run: _Run, m: _Method, a: dict) -> None:
    run.per_point[f"{m.name}.knn{run.K}_certified"] = a["radii"]
    run.rows["knn11"] += _rows(m.name, run.grid, a["radii"], "certified")


def _attack_compute(run: _Run, m: _Method) -> dict:
    from ..robustness.attacks import attack

    ds, n_att = run.ds, run.n_attack
    run.say(f"{run.dataset}/{m.name}", 0.0, f"region attack on {n_att} points")
    res = attack(ds.X_train, ds.y_train, ds.X_test[:n_att], ds.y_test[:n_att], m.M, run.K, method="region",
                 device=run.device)
    return {"norms": np.asarray(res.norms, dtype=float)}


def _attack_record(run: _Run, m: _Method, a: dict) -> None:
    K, n_att, grid = run.K, run.n_attack, run.grid
    norms = a["norms"]
    cert_r = run.per_point[f"{m.name}.knn{K}_certified"]
    emp = np.full(len(run.ds.y_test), np.nan)
    emp[:n_att] = norms
    run.per_point[f"{m.name}.knn{K}_empirical"] = emp
    above = cert_r[:n_att] > norms * (1 + RADIUS_TOL) + 1e-12
    cert_err = robust_error_curve(cert_r[:n_att], grid)
    emp_err = robust_error_curve(norms, grid)
    # an attack reports 0 exactly for the points K-NN already misclassifies
    zero_mismatch = int(np.sum((norms == 0) != m.clean[K][:n_att]))
    run.meta["checks"][f"{m.name}/knn{K}"] = {
        "certified_above_attack": int(above.sum()),
        "attack_failures": int(np.isinf(norms).sum()),
        "attack_zero_not_misclassified": zero_mismatch}
    for r, e, c in zip(grid, emp_err, cert_err):
        run.rows["attack"].append({"method": m.name, "radius": float(r), "robust_error_pct": 100 * float(e),
                                   "n_points": int(n_att), "kind": "empirical (region attack)",
                                   "certified_same_points_pct": 100 * float(c)})


@dataclass(frozen=True)
class _Stage:
    """An evaluation stage of the plan: what it computes (cached) and how it is recorded.

    ``cache`` names its file under ``runs/`` (``{K}`` is replaced by K) and ``expect``
    what that file must hold (:func:`_valid_stage`); ``label`` names it in a failure; a
    ``required`` stage that fails ends the method's evaluation (the later stages need it).
    Where its results go in ``results/<dataset>/`` is ``results_folder.LAYOUT[name]``."""

    name: str
    cache: str
    label: str
    compute: Callable[[_Run, _Method], dict]
    record: Callable[[_Run, _Method, dict], None]
    required: bool
    expect: Callable[[_Run], dict]
    extra_settings: Callable[[_Run], dict] = lambda run: {}


EVALUATION_STAGES = (
    _Stage("nn1", "nn1", "exact 1-NN", _nn1_compute, _nn1_record, required=False,
           expect=lambda run: {"exact": (len(run.ds.y_test), "f"), "verified": (len(run.ds.y_test), "b"),
                               "bound": (len(run.ds.y_test), "f")}),
    _Stage("knn11", "knn{K}", "{K}-NN certification", _certify_compute, _certify_record, required=True,
           expect=lambda run: {"radii": (len(run.ds.y_test), "f")}),
    _Stage("attack", "attack{K}", "{K}-NN attack", _attack_compute, _attack_record, required=True,
           expect=lambda run: {"norms": (run.n_attack, "f")}, extra_settings=lambda run: {"n_attack": run.n_attack}),
)


def _run_stage(run: _Run, m: _Method, stage: _Stage) -> bool:
    """Compute (or load) one stage of one method and record it; False when it failed."""
    K, lay = run.K, LAYOUT[stage.name]
    path = _stage_path(run.runs_dir, m.key, stage.cache.format(K=K), {**run.eval_settings, **stage.extra_settings(run)})
    try:
        arrays, secs, cached = _cached_stage(path, lambda: stage.compute(run, m), m.stamp, stage.expect(run))
    except _STAGE_ERRORS as exc:
        run.failed(m.name, stage.label.format(K=K), exc)
        return False
    m.meta["stage_s"][lay.time_key.format(K=K)] = secs
    m.meta["cached"][lay.cached_key.format(K=K)] = cached
    stage.record(run, m, arrays)
    run.done.setdefault(m.name, set()).add(stage.name)
    return True


def reproduce_dataset(dataset: str, plan: Plan, *, data_dir=None, runs_dir="runs", results_dir="results",
                      device: str = "auto", progress: StageProgress | None = None) -> dict:
    """Run (or resume) one data set and merge it into ``results/<dataset>/``. Returns the
    metadata written.

    Per method: the fit (:func:`_fit_stage`), then the plan's stages of
    :data:`EVALUATION_STAGES` in order. A method that cannot be fitted, or a stage that
    fails (a solver that does not converge), is recorded in ``meta['failures']`` and the
    run goes on; a soundness violation is recorded in ``meta['violations']``. Tables, rows
    and entries this run did not recompute stay as they were
    (:func:`arml_core.evaluation.results_folder.save_results`); ``meta['merge']`` says
    what was kept, what was dropped and why, and this run's own failures and violations."""
    say = progress or (lambda *a: None)
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    t_load = time.perf_counter()
    full = load_dataset(dataset, data_dir=data_dir, n_test=plan.n_test, seed=plan.seed)
    ds = _subsample(full, plan.reference_n_train, plan.seed)  # scaled as the full protocol scales
    load_s = time.perf_counter() - t_load
    K, grid = plan.n_neighbors, np.asarray(plan.grid, dtype=float)
    if min(np.bincount(np.unique(ds.y_train, return_inverse=True)[1])) < K:
        raise ValueError(f"{dataset}: a class has fewer than K = {K} training points")
    n_att = len(ds.y_test) if plan.n_attack is None else min(plan.n_attack, len(ds.y_test))
    data_sha = fingerprint(ds.X_train, ds.y_train, ds.X_test, ds.y_test)
    meta = {"dataset": dataset, "description": ds.description, "profile": plan.profile,
            "n_train_full": int(len(full.y_train)), "n_train": int(len(ds.y_train)),
            "n_test": int(len(ds.y_test)), "n_features": int(ds.n_features), "K": K, "grid": list(map(float, grid)),
            "n_attack": int(n_att) if "attack" in plan.stages else 0, "device": _device_name(dev),
            "host": platform.node(), "data_fingerprint": data_sha, "load_s": load_s, "methods": {}, "checks": {}}
    run = _Run(dataset, plan, ds, runs_dir, device, say,
               eval_settings={"n_test": plan.n_test, "seed": plan.seed, "K": K,
                              "reference_n_train": plan.reference_n_train or 0},
               data_sha=data_sha, n_attack=n_att, meta=meta, per_point={"label": ds.y_test})
    for method in plan.methods:
        m = _fit_stage(run, method)
        if m is None:
            continue
        for r, mm in [(run, m), *_pruned_stage(run, m)]:  # the pruned set: beyond the paper, on request
            for stage in EVALUATION_STAGES:
                if stage.name in plan.stages and not _run_stage(r, mm, stage) and stage.required:
                    break
            else:
                say(f"{dataset}/{mm.name}", 1.0, "done " + ", ".join(f"{s} {v:.1f} s" for s, v in mm.meta["stage_s"].items()))
    written = save_results(results_dir, RunOutput(plan, meta, run.rows, run.per_point, run.done))
    for d in written["merge"]["dropped"]:
        say(dataset, 1.0, f"earlier results dropped: {d}")
    return written


def _rows(method, grid, radii, kind) -> list[dict]:
    err = robust_error_curve(radii, grid)
    return [{"method": method, "radius": float(r), "robust_error_pct": 100 * float(e), "n_points": int(len(radii)),
             "kind": kind} for r, e in zip(grid, err)]


def _device_name(dev) -> str:
    import torch

    if str(dev).startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {_n_cpus()} cores, torch {torch.__version__})"


def _n_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not Linux
