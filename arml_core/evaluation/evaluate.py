"""The end-to-end evaluation of (data set, methods, K, radius grid).

:func:`fit_metric` fits one learner; :func:`radii_for` gives every test point its
radius, exact for K = 1 (:mod:`arml_core.robustness.exact`) and the certified lower
bound for K > 1 (:mod:`arml_core.robustness.certify`); :func:`evaluate` does both
for several methods (optionally with an attack) and returns an :class:`Evaluation`
(tidy and paper-layout tables). :func:`clean_error`, :func:`misclassified` and
:func:`robust_error_table` are the one place the CLI, ``reproduce`` and the app
compute those. Robust error at ``r``: ARML_NOTES section 2
(:func:`arml_core.metric.robust_error_curve`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..data import Dataset
from ..knn import MahalanobisKNN, check_n_neighbors
from ..learners import LEARNERS, make_learner
from ..metric import metric_from_components, robust_error_curve
from ..robustness.certify import certified_radii
from ..robustness.exact import minimal_perturbations
from .summary import paper_layout

StageProgress = Callable[[str, float, str], None]  # (stage, fraction in [0, 1], message)


def parse_grid(text: str | Sequence[float]) -> np.ndarray:
    """'0,0.1,0.2' or a sequence -> a sorted array of distinct non-negative radii."""
    if isinstance(text, str):
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"the radius grid must be numbers separated by commas, got {text!r}") from None
    else:
        values = [float(v) for v in text]
    grid = np.asarray(values, dtype=float)
    if grid.size == 0:
        raise ValueError("the radius grid is empty")
    if not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ValueError(f"radii must be finite and non-negative, got {values}")
    return np.unique(grid)


def misclassified(dataset: Dataset, M, n_neighbors: int, *, device: str = "auto") -> np.ndarray:
    """Per test point: does K-NN under ``M`` (None: Euclidean) get it wrong?"""
    knn = MahalanobisKNN(M, n_neighbors=n_neighbors, device=device).fit(dataset.X_train, dataset.y_train)
    return knn.predict(dataset.X_test) != dataset.y_test


def clean_error(dataset: Dataset, M, n_neighbors: int, *, device: str = "auto") -> float:
    """The fraction of test points K-NN under ``M`` misclassifies (the robust error at r = 0
    for the exact and empirical radii; the certified error at 0 can be larger)."""
    return float(np.mean(misclassified(dataset, M, n_neighbors, device=device)))


def robust_error_table(radii_by_method: dict, grid, *, label: Callable[[str], str] = str) -> pd.DataFrame:
    """Robust error in % in the paper's layout: one row per method (named by ``label``),
    one column per radius of ``grid`` (``f"{r:g}"``), from per-point radii (exact,
    certified or an attack's norms)."""
    grid = np.atleast_1d(np.asarray(grid, dtype=float))
    return pd.DataFrame({f"{g:g}": [100 * robust_error_curve(r, [g])[0] for r in radii_by_method.values()]
                         for g in grid}, index=[label(m) for m in radii_by_method])


def radii_for(dataset: Dataset, M, n_neighbors: int, *, device: str = "auto",
              box=None, progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, str]:
    """Exact radii for K = 1, certified lower bounds for K > 1, and which of the two."""
    K = check_n_neighbors(n_neighbors, dataset.y_train)
    args = (dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test, M)
    if K == 1:
        norms, _ = minimal_perturbations(*args, box=box, device=device, progress=progress)
        return norms, "exact"
    return certified_radii(*args, K, device=device, progress=progress), "certified"


@dataclass
class MethodResult:
    method: str
    components: np.ndarray
    radii: np.ndarray
    kind: str
    clean_error: float
    fit_time: float
    eval_time: float
    info: dict = field(default_factory=dict)
    empirical: np.ndarray | None = None  # attack norms (inf: the attack failed)
    empirical_method: str | None = None
    attack_time: float = 0.0


@dataclass
class Evaluation:
    dataset: str
    n_neighbors: int
    grid: np.ndarray
    results: dict[str, MethodResult]
    description: str = ""

    def tidy(self) -> pd.DataFrame:
        """One row per (method, radius)."""
        rows = []
        for name, r in self.results.items():
            curve = robust_error_curve(r.radii, self.grid)
            for radius, err in zip(self.grid, curve):
                rows.append(dict(dataset=self.dataset, method=name, K=self.n_neighbors, kind=r.kind,
                                 radius=float(radius), robust_error=float(err),
                                 clean_error=r.clean_error, n_test=len(r.radii),
                                 fit_time_s=r.fit_time, eval_time_s=r.eval_time))
            if r.empirical is not None:
                for radius, err in zip(self.grid, robust_error_curve(r.empirical, self.grid)):
                    rows.append(dict(dataset=self.dataset, method=name, K=self.n_neighbors,
                                     kind=f"empirical ({r.empirical_method})", radius=float(radius),
                                     robust_error=float(err), clean_error=r.clean_error,
                                     n_test=len(r.empirical), fit_time_s=r.fit_time, eval_time_s=r.attack_time))
        return pd.DataFrame(rows)

    def paper_table(self, empirical: bool = False) -> pd.DataFrame:
        """The paper's layout: rows = methods, columns = radii, robust error in %
        (the certified/exact block, or with ``empirical=True`` the attack block)."""
        t = self.tidy()
        emp = t.kind.str.startswith("empirical")
        t = t[emp] if empirical else t[~emp]
        return (paper_layout(t, "robust_error", self.results) * 100).round(1)


def fit_metric(dataset: Dataset, method: str, *, params: dict | None = None, device: str = "auto",
               progress: StageProgress | None = None, stop=None, timeout: float | None = None,
               subprocess_after: float | None = None) -> tuple[np.ndarray, float, dict]:
    """Fit one learner on the training split: (components, seconds, info).

    ``stop`` (a ``threading.Event``) and ``timeout`` (seconds) end a fit early with
    :class:`~arml_core.learners.FitStopped`: ARML between epochs (through its callback;
    with a ``checkpoint`` in ``params`` the next fit resumes there), the metric-learn
    learners in a child process (:func:`~arml_core.learners.fit_in_subprocess`), used when
    ``stop``/``timeout`` is given and their estimated fit time
    (:func:`~arml_core.limits.estimate_fit_seconds`) is at least ``subprocess_after``
    seconds (default 0: always); quicker fits run here (a child costs about a second)."""
    from ..learners import FitStopped, fit_in_subprocess
    from ..limits import estimate_fit_seconds

    params = dict(params or {})
    key = method.lower()
    start = time.perf_counter()
    if key == "arml":
        params.setdefault("device", device)
        n_epochs = params.get("n_epochs", 1000)
        user_cb = params.get("callback")

        def callback(e, loss):
            if progress is not None:
                progress(key, e / n_epochs, f"epoch {e}/{n_epochs}, loss {loss:.4f}")
            if stop is not None and stop.is_set():
                return False
            if timeout is not None and time.perf_counter() - start > timeout:
                return False
            return None if user_cb is None else user_cb(e, loss)

        if progress is not None or stop is not None or timeout is not None:
            params["callback"] = callback
    est = make_learner(key, **params)
    if progress is not None:
        progress(key, 0.0, f"fitting {LEARNERS.get(key, key)}")
    child = (key in ("nca", "lmnn", "itml", "lfda") and (stop is not None or timeout is not None)
             and estimate_fit_seconds(key, *dataset.X_train.shape) >= (subprocess_after or 0.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if child:
            max_iter = getattr(est, "max_iter", None)

            def relay(it, msg):
                if progress is not None:
                    frac = min(0.99, it / max_iter) if it is not None and max_iter else 0.0
                    progress(key, frac, msg)

            fit_in_subprocess(est, dataset.X_train, dataset.y_train, stop, timeout=timeout, progress=relay)
        else:
            est.fit(dataset.X_train, dataset.y_train)
    seconds = time.perf_counter() - start
    why = None
    if key == "arml" and est.stop_reason_.startswith("stopped by the callback"):
        why = ("stop" if stop is not None and stop.is_set() else
               "timeout" if timeout is not None and seconds > timeout else None)
    if why is not None:
        raise FitStopped(f"the ARML fit was stopped at epoch {est.n_iter_} of {n_epochs}"
                         + (" (time limit)" if why == "timeout" else ""), why, seconds)
    G = np.asarray(est.components_, dtype=np.float64)
    if not np.all(np.isfinite(G)):
        raise ValueError(f"{LEARNERS.get(key, key)} produced a non-finite metric on {dataset.name}")
    info = {"warnings": sorted({str(w.message).splitlines()[0][:200] for w in caught
                                 if not issubclass(w.category, (FutureWarning, DeprecationWarning))})}
    if getattr(est, "projected_rank_", None):
        info["projected_rank"] = int(est.projected_rank_)
    if key == "arml":
        info.update(loss_curve=list(map(float, est.loss_curve_)), n_iter=int(est.n_iter_),
                    converged=bool(est.converged_), stop_reason=est.stop_reason_,
                    resumed_from=int(getattr(est, "resumed_from_", 0) or 0))
    if progress is not None:
        progress(key, 1.0, f"fitted in {seconds:.1f} s")
    return G, seconds, info


def evaluate(dataset: Dataset, methods: Sequence[str], n_neighbors: int, grid, *,
             metrics: dict[str, np.ndarray] | None = None, params: dict[str, dict] | None = None,
             device: str = "auto", box=None, progress: StageProgress | None = None,
             empirical: str | None = None, attack_settings: dict | None = None) -> Evaluation:
    """Fit (unless ``metrics[method]`` gives its components) and evaluate each method.

    ``empirical`` ('region', 'boundary' or 'hopskipjump') also attacks every test point,
    so each method has both curves (certified/exact and empirical)."""
    grid = parse_grid(grid)
    K = check_n_neighbors(n_neighbors, dataset.y_train)
    if not methods:
        raise ValueError("no method selected")
    metrics = dict(metrics or {})
    params = dict(params or {})
    results = {}
    for name in methods:
        if name in metrics:
            G, fit_time, info = np.asarray(metrics[name], dtype=float), 0.0, {"loaded": True}
        else:
            G, fit_time, info = fit_metric(dataset, name, params=params.get(name), device=device,
                                           progress=progress)
        M = metric_from_components(G)
        clean = clean_error(dataset, M, K, device=device)
        start = time.perf_counter()
        stage = f"{name}: {'exact radii' if K == 1 else 'certifying'}"
        cb = None if progress is None else (lambda d, t, s=stage: progress(s, d / max(t, 1), f"{d}/{t} test points"))
        radii, kind = radii_for(dataset, M, K, device=device, box=box, progress=cb)
        res = MethodResult(name, G, radii, kind, clean, fit_time, time.perf_counter() - start, info)
        if empirical:
            from ..robustness.attacks import attack

            if progress is not None:
                progress(f"{name}: {empirical} attack", 0.0, f"{len(dataset.X_test)} test points")
            t0 = time.perf_counter()
            out = attack(dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test, M, K,
                         method=empirical, box=box, device=device, **dict(attack_settings or {}))
            res.empirical, res.empirical_method = np.asarray(out.norms, dtype=float), empirical
            res.attack_time = time.perf_counter() - t0
            if progress is not None:
                progress(f"{name}: {empirical} attack", 1.0, f"{res.attack_time:.1f} s")
        results[name] = res
    return Evaluation(dataset.name, K, grid, results, dataset.description)
