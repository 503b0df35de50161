"""Training that outlives the page that started it: :class:`TrainingJob` fits a list of
methods one after another in a background thread, hands each finished metric to a
callback the moment it is done (the app stores it in the session and in ``runs/``), and
can be stopped between epochs (ARML) or at once (metric-learn fits run in a child
process, :func:`~arml_core.learners.fit_in_subprocess`). No Streamlit here: the app polls
:meth:`TrainingJob.states` to draw progress, and a script rerun (a page switch, a second
tab) neither stops nor loses it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .data import Dataset
from .evaluation.evaluate import fit_metric
from .learners import FitStopped
from .learners.registry import display_name
from .limits import estimate_fit_seconds

__all__ = ["FitTask", "TaskState", "TrainingJob", "fit_estimate"]

#: metric-learn fits estimated at least this long run in a child process (so Stop ends them)
SUBPROCESS_AFTER_S = 2.0


@dataclass(frozen=True)
class FitTask:
    """One fit: ``key`` names the result (an entry of the app: a method, or a named ARML run),
    ``method`` the learner, ``params`` its parameters, ``label`` its display name."""

    key: str
    method: str
    params: dict = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or display_name(self.method)


@dataclass(frozen=True)
class TaskState:
    """Where one task stands: ``status`` is queued, running, done, failed or stopped;
    ``fraction`` in [0, 1] (None: unknown, metric-learn without an iteration count),
    ``message`` the latest progress line or the error, ``estimate_s`` the cost model's
    guess (:func:`fit_estimate`), ``elapsed_s`` seconds so far or in all."""

    key: str
    name: str
    status: str = "queued"
    fraction: float | None = 0.0
    message: str = ""
    estimate_s: float = 0.0
    elapsed_s: float = 0.0
    started: float | None = None


def fit_estimate(method: str, params: dict, n_samples: int, n_features: int) -> float:
    """Seconds one fit will take (:func:`~arml_core.limits.estimate_fit_seconds`, measured
    with ARML's app settings of 300 epochs: scaled linearly in ``n_epochs``)."""
    est = estimate_fit_seconds(method, n_samples, n_features)
    if str(method).lower() == "arml":
        est *= max(1, int(params.get("n_epochs", 300))) / 300
    return float(est)


class TrainingJob:
    """Fit ``tasks`` on ``dataset`` one by one in a daemon thread.

    ``on_done(task, G, seconds, info)`` is called in that thread the moment a fit
    finishes (an exception it raises marks the task failed). ``timeout(task, estimate)``
    gives a task's time limit in seconds (None: none); a fit over it ends as ``stopped``
    with the reason. :meth:`stop` ends the running fit (between ARML epochs; a metric-learn
    child at once) and skips the rest. :meth:`states` is a snapshot, safe from any thread."""

    def __init__(self, dataset: Dataset, tasks: Sequence[FitTask],
                 on_done: Callable[[FitTask, np.ndarray, float, dict], None], *, device: str = "auto",
                 timeout: Callable[[FitTask, float], float | None] | None = None):
        self.dataset = dataset
        self.tasks = list(tasks)
        self._on_done = on_done
        self._device = device
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        n, d = dataset.X_train.shape
        self._states = {t.key: TaskState(t.key, t.name, estimate_s=fit_estimate(t.method, t.params, n, d))
                        for t in self.tasks}
        self._thread = threading.Thread(target=self._run, name="arml-training", daemon=True)
        self.started_at = time.time()

    # -- control ---------------------------------------------------------------------------
    def start(self) -> "TrainingJob":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the running fit and skip the queued ones."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (or ``timeout``); True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- state -----------------------------------------------------------------------------
    def states(self) -> list[TaskState]:
        now = time.monotonic()
        with self._lock:
            out = []
            for t in self.tasks:
                s = self._states[t.key]
                if s.status == "running" and s.started is not None:
                    s = replace(s, elapsed_s=now - s.started)
                out.append(s)
            return out

    def state(self, key: str) -> TaskState:
        return next(s for s in self.states() if s.key == key)

    def _set(self, key: str, **changes) -> None:
        with self._lock:
            self._states[key] = replace(self._states[key], **changes)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        for task in self.tasks:
            if self._stop.is_set():
                self._set(task.key, status="stopped", message="not started: the job was stopped")
                continue
            started = time.monotonic()
            self._set(task.key, status="running", started=started, message="starting")
            limit = self._timeout(task, self._states[task.key].estimate_s) if self._timeout else None

            def progress(stage, frac, msg, _key=task.key):
                self._set(_key, fraction=None if frac is None else float(frac), message=str(msg))

            try:
                G, seconds, info = fit_metric(self.dataset, task.method, params=dict(task.params),
                                              device=self._device, progress=progress, stop=self._stop,
                                              timeout=limit, subprocess_after=SUBPROCESS_AFTER_S)
                self._on_done(task, G, seconds, info)
            except FitStopped as exc:
                self._set(task.key, status="stopped", message=str(exc), elapsed_s=time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 -- any failure of one fit is that task's message
                self._set(task.key, status="failed", message=str(exc) or type(exc).__name__,
                          elapsed_s=time.monotonic() - started)
            else:
                self._set(task.key, status="done", fraction=1.0, message=f"trained in {seconds:.1f} s",
                          elapsed_s=seconds)
