"""Training in the app: one background :class:`arml_core.jobs.TrainingJob` per session.

A fit runs in its own thread, so a page switch, a second tab or a rerun neither stops nor
loses it; each metric is stored (session + ``runs/``) the moment it finishes and the pages
redraw method by method. Stop ends it between ARML epochs (ARML keeps a checkpoint in
``runs/checkpoints/`` and the next Train resumes from it) or ends a metric-learn child
process at once. What one fit may cost on this server is capped (``ARML_MAX_FIT_SECONDS``).

UI glue only; the job itself is ``arml_core.jobs``.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import streamlit as st

from arml_core.jobs import FitTask, TrainingJob, fit_estimate
from arml_core.plots import display_name

#: the longest fit one request may start here (estimated, and enforced as a time limit)
MAX_FIT_S = float(os.environ.get("ARML_MAX_FIT_SECONDS", "600"))
#: selections whose missing fits are estimated under this train by themselves on first view
AUTO_TRAIN_S = float(os.environ.get("ARML_AUTO_TRAIN_SECONDS", "8"))
_POLL_S = 0.3


def _shared():
    from app_pages import _shared

    return _shared


def checkpoint_path(ds, sel, method: str) -> Path:
    sh = _shared()
    key = sh.metric_key(ds, sel, method)
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return Path(sh.runs_dir()) / "checkpoints" / f"{method}-{digest}.pt"


def estimates(ds, sel, methods) -> dict[str, float]:
    """Estimated seconds of each method's fit on this training set (Euclidean: 0)."""
    sh = _shared()
    n, d = ds.X_train.shape
    return {m: fit_estimate(m, sh.fit_params(m, sel), n, d) for m in methods if m != "euclidean"}


def fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def button_label(ds, sel, todo) -> str:
    """'Train 3 methods (about 40 s)' / 'Resume ARML' where a checkpoint waits."""
    est = sum(estimates(ds, sel, todo).values())
    resume = [m for m in todo if m == "arml" and checkpoint_path(ds, sel, m).exists()]
    verb = "Resume" if resume and len(todo) == 1 else "Train"
    what = display_name(todo[0]) if len(todo) == 1 else f"{len(todo)} methods"
    return f"{verb} {what}" + (f" (about {fmt_seconds(est)})" if est >= 1 else "")


def job() -> dict | None:
    return st.session_state.get("job")


def running() -> bool:
    j = job()
    return j is not None and j["job"].running


def start(ds, sel, methods) -> list[str]:
    """Start fitting ``methods`` (those over the cost cap are refused with a message); returns
    the methods started. Euclidean needs no fit: it is stored at once."""
    sh = _shared()
    if running():
        st.warning("A training run is in progress: wait for it or press Stop.")
        return []
    est = estimates(ds, sel, methods)
    tasks = []
    for m in dict.fromkeys(methods):
        if m == "euclidean":
            sh.put_identity(ds, sel)
            continue
        if est[m] > MAX_FIT_S:
            st.error(f"{display_name(m)} on {ds.X_train.shape[0]:,} × {ds.X_train.shape[1]:,} is estimated at "
                     f"{fmt_seconds(est[m])}, over this server's limit of {fmt_seconds(MAX_FIT_S)} per fit "
                     "(ARML_MAX_FIT_SECONDS). Use fewer training points, or train it with the command line "
                     f"(`python -m arml_core train --dataset ... --method {m}`) and load the saved metric.")
            continue
        params = sh.fit_params(m, sel)
        if m == "arml":
            ck = checkpoint_path(ds, sel, m)
            ck.parent.mkdir(parents=True, exist_ok=True)
            params = {**params, "checkpoint": str(ck)}
        tasks.append(FitTask(m, m, params))
    if not tasks:
        return []
    # everything the thread needs is read here: it must not touch st.session_state
    keys = {t.key: sh.metric_key(ds, sel, t.method) for t in tasks}
    settings = {t.key: sh.method_settings(t.method, sel) for t in tasks}
    ds_key, persist = sh.train_key(ds, sel), not sel["dataset"].startswith(sh.UPLOAD_PREFIX)
    metrics = st.session_state["metrics"]  # the same dict object across reruns: the thread writes into it

    def on_done(task, G, seconds, info):
        metrics[keys[task.key]] = {"G": G, "fit_time": seconds, "info": info, "source": "trained",
                                   "settings": settings[task.key]}
        if persist:  # an uploaded data set's metrics stay in the session
            sh.store_run(ds_key, task.method, settings[task.key], G, seconds, info)

    j = TrainingJob(ds, tasks, on_done, timeout=lambda task, e: MAX_FIT_S).start()
    st.session_state["job"] = {"job": j, "ds_key": ds_key, "dataset": ds.name, "seen": 0}
    return [t.key for t in tasks]


def maybe_auto_train(ds, sel, missing) -> bool:
    """On the first view of a selection whose missing fits are quick (or that a copied link
    asks for, up to the cost cap), start them."""
    if not missing or running():
        return False
    sh = _shared()
    tag = (sh.train_key(ds, sel), tuple(missing), repr(sorted(st.session_state["arml_params"].items())))
    done = st.session_state.setdefault("auto_started", set())
    budget = MAX_FIT_S if st.session_state.get("from_link") else AUTO_TRAIN_S  # a copied link: its picture
    if tag in done or sum(estimates(ds, sel, missing).values()) > budget:
        return False
    done.add(tag)
    return bool(start(ds, sel, missing))


def _line(s) -> str:
    est = f" of about {fmt_seconds(s.estimate_s)}" if s.estimate_s >= 1 else ""
    if s.status == "running":
        return f"**{s.name}**: {s.message} — {s.elapsed_s:.0f} s{est}"
    return f"**{s.name}**: {s.status}" + (f" — {s.message}" if s.message else "")


def follow(where=None) -> None:
    """Draw the session's training run in ``where`` (default: the main area) until it ends,
    rerunning the app whenever another metric has finished (the pages then draw it)."""
    j = job()
    if j is None:
        return
    tj = j["job"]
    if not tj.running:
        _report(j, where or st)
        return
    box = (where or st).container(border=True)
    box.markdown(f"**Training on {j['dataset']}** (it goes on if you switch pages)")
    if box.button("Stop training", key=f"stop_{id(tj)}_{'side' if where is not None else 'main'}",
                  type="secondary"):
        tj.stop()
    bars = {s.key: box.progress(0.0, text=_line(s)) for s in tj.states()}
    while True:
        states = tj.states()
        for s in states:
            frac = s.fraction if s.fraction is not None else min(0.95, s.elapsed_s / max(s.estimate_s, 1.0))
            bars[s.key].progress(min(1.0, max(0.0, frac if s.status != "done" else 1.0)), text=_line(s))
        finished = sum(s.status in ("done", "failed", "stopped") for s in states)
        if finished != j["seen"] or not tj.running:
            j["seen"] = finished
            st.rerun()
        time.sleep(_POLL_S)


def _report(j, where) -> None:
    """After the run: what failed or was stopped, once per run (then the run is forgotten)."""
    for s in j["job"].states():
        if s.status == "failed":
            where.error(f"{s.name} failed: {s.message}")
        elif s.status == "stopped":
            again = " Press Train to resume it from its last checkpoint." if s.key == "arml" else ""
            where.warning(f"{s.name} was stopped: {s.message.rstrip('.')}.{again}")
    st.session_state["job"] = None
