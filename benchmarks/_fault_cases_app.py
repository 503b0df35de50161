"""The app surface of ``fault_inventory.py``: each case drives the Streamlit app through
AppTest (``streamlit.testing.v1``) in the forked child, on its own ``runs/`` folder.

What the app shows is mapped onto the inventory's classes: an exception element (the
traceback a user would see) raises :class:`AppTraceback` (``traceback``); the expected
``st.error`` raises ``ValueError`` with its text (``clear error``); a case that must end
well returns an :class:`AppResult` that its check judges (``handled`` or ``silent
failure``); a trained runs/ file that must survive is ``protect``-ed (``data lost``).
The same findings are unit tests in ``tests/test_app_hardening.py``.
"""
from __future__ import annotations

import json
import shutil
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fault_inventory import Case, metric_npz, npz_bomb, protect, rows

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["app_pages/train.py", "app_pages/boundaries.py", "app_pages/curves.py", "app_pages/examples.py",
         "app_pages/pairwise.py", "app_pages/reproduction.py"]
IRIS_G = np.diag([1.0, 2.0, 0.5, 1.5])


class AppTraceback(Exception):
    """The app showed an exception (a traceback) instead of a message."""


@dataclass
class AppResult:
    at: object
    notes: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"app run ({', '.join(f'{k}={v!r}'[:60] for k, v in self.notes.items())})"


def warm() -> None:
    """Import the app's modules once in the parent, so every forked case starts warm."""
    import streamlit.testing.v1  # noqa: F401

    from app_pages import _shared, _training  # noqa: F401  (not a page: importing one would run it)


# -- driving the app ----------------------------------------------------------------------------
_JOBS: list = []


def _configure(tmp: Path, *, max_fit_s: float = 600.0) -> Path:
    """This child's runs/ folder, no auto-train on the first view, the cost cap, jobs recorded."""
    from app_pages import _shared, _training
    from arml_core.jobs import TrainingJob

    class Recorded(TrainingJob):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            _JOBS.append(self)

    runs = tmp / "runs"
    _shared.RUNS_DIR = str(runs)
    _training.AUTO_TRAIN_S = 0.0
    _training.MAX_FIT_S = float(max_fit_s)
    _training.TrainingJob = Recorded
    import os

    os.chdir(ROOT)
    return runs


def _session():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def _ok(at, what=""):
    """Raise AppTraceback if the app drew an exception."""
    if at.exception:
        e = at.exception[0]
        raise AppTraceback(f"{what}: {getattr(e, 'message', e)}"[:300])
    return at


def _run(at, what=""):
    return _ok(at.run(), what)


def _select(at, dataset="iris", n_test=20, methods=("euclidean",), epochs=None):
    _run(at, "first view")
    _run(at.selectbox(key="w_dataset").set_value(dataset), "data set")
    _run(at.number_input(key="w_n_test").set_value(n_test), "n_test")
    _run(at.multiselect(key="w_methods").set_value(list(methods)), "methods")
    if epochs is not None:
        _run(at.number_input(key="t_epochs").set_value(epochs), "epochs")
    return at


def _train(at):
    return _run(at.button(key="t_train").click(), "train")


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _names(at) -> set:
    return {t.get("name") for el in at.get("plotly_chart") for t in json.loads(el.proto.spec)["data"]}


def _message(at, needle: str) -> None:
    """The expected clear error: raise it as a ValueError (else return: a silent failure)."""
    for e in _errors(at):
        if needle in e:
            raise ValueError(e)


def _rec(at, method):
    hits = [r for (_, m, _), r in at.session_state["metrics"].items() if m == method]
    return hits[0] if len(hits) == 1 else None


def _upload_metric(at, name, data: bytes):
    _run(at.file_uploader(key="t_upload").upload(name, data), "choose metric file")
    return _run(at.button(key="t_load").click(), "load metric")


def _upload_data(at, name, data: bytes):
    return _run(at.file_uploader(key="w_upload").upload(name, data), "upload data set")


def _visit_all(at) -> None:
    for page in PAGES:
        _run(at.switch_page(page), page)


def _runs_files(runs: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in runs.glob("*.np*")} if runs.is_dir() else {}


def _leave_while_training():
    """Patch the progress poll so the run that started a fit ends at once (a page switch)."""
    import streamlit as st

    from app_pages import _training

    _training.time = types.SimpleNamespace(sleep=lambda s: st.stop())
    return lambda: setattr(_training, "time", time)


# -- the cases ------------------------------------------------------------------------------------
def _uploaded_metric_private(tmp):
    runs = _configure(tmp)
    at = _select(_session(), methods=["euclidean", "lfda"])
    _train(at)
    (lfda,) = runs.glob("*__lfda__*.npz")
    protect(tmp, str(lfda.relative_to(tmp)))
    before = _runs_files(runs)
    _upload_metric(at, "lfda.npz", metric_npz(IRIS_G))  # named like a trained method
    other = _select(_session(), methods=["euclidean", "lfda"])
    _visit_all(other)
    return AppResult(at, {"names": _names(_run(at.switch_page("app_pages/train.py"))), "other": _names(
        _run(other.switch_page("app_pages/train.py"))), "runs_same": _runs_files(runs) == before,
        "lfda_source": (_rec(at, "lfda") or {}).get("source")})


def _check_private(r, warned):
    n = r.notes
    if "Upload: lfda.npz (exact)" not in n["names"]:
        return f"the upload is not shown as 'Upload: lfda.npz': {sorted(x for x in n['names'] if x)}"
    if "LFDA (exact)" not in n["names"] or n["lfda_source"] != "trained":
        return f"the trained LFDA was replaced (source {n['lfda_source']!r})"
    if any("Upload" in (x or "") for x in n["other"]):
        return "another session sees the upload"
    return None if n["runs_same"] else "runs/ changed by an upload"


def _metric_upload(data: bytes, needle: str, pages=True):
    """Upload ``data`` as a metric; with ``pages``, then visit every page in this and a fresh session."""
    def run(tmp):
        _configure(tmp)
        at = _select(_session())
        _upload_metric(at, "m.npz", data)
        errors, accepted = _errors(at), list(at.session_state["uploaded_metrics"])
        if pages:  # no page of either session breaks on it (an exception raises AppTraceback)
            _visit_all(at)
            _visit_all(_select(_session()))
        if not accepted:
            for e in errors:
                if needle in e:
                    raise ValueError(e)
        return AppResult(at, {"accepted": accepted, "errors": errors})
    return run


def _tampered(kind):
    def run(tmp):
        runs = _configure(tmp)
        at = _train(_select(_session(), methods=["euclidean", "lfda", "arml"], epochs=30))
        (arml,) = runs.glob("*__arml__*.npz")
        (lfda,) = runs.glob("*__lfda__*.npz")
        G = np.array(_rec(at, "arml")["G"])
        meta = json.loads(str(np.load(arml)["metadata"]))
        if kind == "list":
            arml.write_bytes(metric_npz(G, [1, 2]))
        elif kind == "fit_time":
            arml.write_bytes(metric_npz(G, {**meta, "fit_time_s": "abc"}))
        else:
            shutil.copyfile(lfda, arml)
        other = _select(_session(), methods=["euclidean", "lfda", "arml"], epochs=30)
        shown = [w.value for w in other.warning]
        label = other.button(key="t_train").label
        _train(other)
        rec = _rec(other, "arml") or {}
        return AppResult(other, {"warnings": shown, "label": label, "source": rec.get("source"),
                                 "same": rec.get("G") is not None and np.allclose(rec["G"], G)})
    return run


def _check_tampered(r, warned):
    n = r.notes
    if not any("ignoring the saved run" in w for w in n["warnings"]):
        return f"no warning about the tampered file (label {n['label']!r})"
    if not n["label"].startswith("Train ARML"):
        return f"the tampered file was used: the button offers {n['label']!r}"
    return None if n["source"] == "trained" and n["same"] else f"not recomputed: source {n['source']!r}"


def _link(params: dict, look: dict):
    def run(tmp):
        _configure(tmp)
        at = _session()
        at.query_params.update(params)
        _run(at, "open the link")
        notes = [e.value for e in [*at.info, *at.warning] if "From the link" in e.value or "not available" in e.value]
        shown = {}
        for key, _ in look.items():
            kind = {"w_dataset": "selectbox", "w_methods": "multiselect"}.get(key, "number_input")
            shown[key] = getattr(at, kind)(key=key).value
        return AppResult(at, {"notices": notes, "shown": shown, "errors": _errors(at), "look": look,
                              "jobs": [t.method for j in _JOBS for t in j.tasks],
                              "files": sorted(p.name for p in (tmp / "runs").glob("*.npz"))})
    return run


def _check_link(r, warned):
    n = r.notes
    if not n["notices"]:
        return f"no notice (shows {n['shown']})"
    if any(len(x) > 400 for x in n["notices"]):
        return "a notice reprints the whole value"
    if n["shown"] != n["look"]:
        return f"shows {n['shown']}, expected {n['look']}"
    return None


def _check_k0(r, warned):
    return _check_link(r, warned) or (f"an error is shown: {r.notes['errors']}" if r.notes["errors"] else None)


def _dedup(tmp):  # a copied link trains what it shows by itself (up to the cost cap)
    return _link({"dataset": "iris", "n_test": "20", "methods": "arml,arml,arml", "t_epochs": "30"},
                 {"w_methods": ["arml"]})(tmp)


def _check_dedup(r, warned):
    n = r.notes
    if n["shown"]["w_methods"] != ["arml"]:
        return f"methods {n['shown']['w_methods']}"
    if n["jobs"] != ["arml"] or len([f for f in n["files"] if "__arml__" in f]) != 1:
        return f"trained {n['jobs']} ({len(n['files'])} runs/ files)"
    return None


def _cost_cap(tmp):
    _configure(tmp, max_fit_s=0.05)
    at = _train(_select(_session(), methods=["euclidean", "arml"]))
    _message(at, "ARML_MAX_FIT_SECONDS")
    return AppResult(at, {"jobs": len(_JOBS), "errors": _errors(at)})


def _data_upload(name, data: bytes, needle: str, methods=("euclidean",)):
    def run(tmp):
        _configure(tmp)
        at = _session()
        _run(at, "first view")
        _upload_data(at, name, data)
        _message(at, needle)
        _run(at.multiselect(key="w_methods").set_value(list(methods)), "methods")
        _train(at)
        _message(at, needle)
        return AppResult(at, {"errors": _errors(at), "names": _names(at)})
    return run


def _wait(pred, seconds=60.0):
    end = time.monotonic() + seconds
    while not pred() and time.monotonic() < end:
        time.sleep(0.02)
    return pred()


def _stop_resume(tmp):
    runs = _configure(tmp)
    at = _select(_session(), methods=["arml"], epochs=3000)
    restore = _leave_while_training()
    try:
        _train(at)
    finally:
        restore()
    (job,) = _JOBS
    if not job.running:
        return AppResult(at, {"problem": "the fit was not running after its page ended"})
    stop = at.button(key=f"stop_{id(job)}_main")
    _wait(lambda: (job.state("arml").fraction or 0) >= 0.02)
    _run(stop.click(), "Stop")
    job.wait(60)
    state = job.state("arml")
    label = at.button(key="t_train").label
    _train(at)
    info = (_rec(at, "arml") or {}).get("info", {})
    return AppResult(at, {"status": state.status, "label": label, "resumed_from": info.get("resumed_from"),
                          "n_iter": info.get("n_iter"), "files": len(list(runs.glob("*__arml__*.npz")))})


def _check_stop(r, warned):
    n = r.notes
    if n.get("problem"):
        return n["problem"]
    if n["status"] != "stopped":
        return f"Stop left the fit {n['status']}"
    if not n["label"].startswith("Resume"):
        return f"no resume offered ({n['label']!r})"
    return None if (n["resumed_from"] or 0) > 0 and n["n_iter"] == 3000 else f"restarted: {n}"


def _page_switch(tmp):
    runs = _configure(tmp)
    at = _select(_session(), methods=["euclidean", "lfda", "nca", "arml"], epochs=600)
    restore = _leave_while_training()
    try:
        _train(at)
    finally:
        restore()
    running = bool(_JOBS) and _JOBS[0].running
    _run(at.switch_page("app_pages/curves.py"), "switch page")
    return AppResult(at, {"was_running": running, "names": _names(at),
                          "files": sorted(p.name.split("__")[1] for p in runs.glob("*.npz"))})


def _check_switch(r, warned):
    n = r.notes
    want = {"Euclidean (exact)", "LFDA (exact)", "NCA (exact)", "ARML (exact)"}
    if not n["was_running"]:
        return "the fit was not running at the switch (the case tests nothing)"
    if not want <= n["names"] or n["files"] != ["arml", "lfda", "nca"]:
        return f"lost: shows {sorted(x for x in n['names'] if x)}, runs/ {n['files']}"
    return None


def _test_size(tmp):
    runs = _configure(tmp)
    at = _train(_select(_session(), methods=["euclidean", "lfda", "arml"], epochs=30))
    ids = {m: id(_rec(at, m)["G"]) for m in ("lfda", "arml")}
    files, jobs = _runs_files(runs), len(_JOBS)
    _run(at.number_input(key="w_n_test").set_value(35), "n_test")
    return AppResult(at, {"same_G": {m: id(_rec(at, m)["G"]) for m in ids} == ids, "label": at.button(
        key="t_train").label, "refit": len(_JOBS) - jobs, "runs_same": _runs_files(runs) == files})


def _check_test_size(r, warned):
    n = r.notes
    return None if n["same_G"] and n["refit"] == 0 and n["runs_same"] and n["label"] == "Retrain all" else \
        f"retrained on a test-size change: {n}"


def _uploaded_data_private(tmp):
    runs = _configure(tmp)
    at = _session()
    _run(at)
    _upload_data(at, "private.csv", rows(40, 3))
    _run(at.multiselect(key="w_methods").set_value(["euclidean", "lfda"]), "methods")
    _train(at)
    other = _run(_session())
    return AppResult(at, {"names": _names(at), "files": _runs_files(runs),
                          "other_sees": [o for o in other.selectbox(key="w_dataset").options if "private" in o]})


def _check_data_private(r, warned):
    n = r.notes
    if "LFDA (exact)" not in n["names"]:
        return "the uploaded data set did not train"
    if n["files"]:
        return f"its metrics were written to runs/: {list(n['files'])}"
    return f"another session lists {n['other_sees']}" if n["other_sees"] else None


def app_cases() -> list[Case]:
    A = "app"
    wide = rows(10, 5000)
    big_index = b"1 1:1\n0 2500000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n"
    out = [
        Case(A, "uploaded metric named like a trained method", _uploaded_metric_private, "ok", _check_private,
             timeout=120),
        Case(A, "uploaded metric 1e160 * I (every page, two sessions)",
             _metric_upload(metric_npz(1e160 * np.eye(4)), "outside the range"), "error", timeout=120),
        Case(A, "uploaded metric: zip bomb (1.15 GB in 1 MB)", _metric_upload(npz_bomb(), "", pages=False), "error",
             timeout=90),
        Case(A, "uploaded metric: complex components",
             _metric_upload(metric_npz(IRIS_G * (1 + 1j)), "complex", pages=False), "error", timeout=90),
        Case(A, "uploaded metric: 3 features for iris", _metric_upload(metric_npz(np.eye(3)), "features",
                                                                       pages=False), "error", timeout=90),
        Case(A, "runs/: metadata a list", _tampered("list"), "ok", _check_tampered, timeout=120),
        Case(A, "runs/: fit_time_s 'abc'", _tampered("fit_time"), "ok", _check_tampered, timeout=120),
        Case(A, "runs/: an LFDA metric under ARML's key", _tampered("lfda"), "ok", _check_tampered, timeout=120),
        Case(A, "?K=0", _link({"dataset": "iris", "K": "0", "n_test": "20"}, {"w_K": 1}), "ok", _check_k0),
        Case(A, "?methods=arml,arml,arml", _dedup, "ok", _check_dedup, timeout=120),
        Case(A, "?n_test=-5", _link({"n_test": "-5"}, {"w_n_test": 0}), "ok", _check_link),
        Case(A, "?seed=abc", _link({"seed": "abc"}, {"w_seed": 42}), "ok", _check_link),
        Case(A, "?seed= 5000 digits", _link({"seed": "9" * 5000}, {"w_seed": 42}), "ok", _check_link),
        Case(A, "?dataset=../../etc/passwd", _link({"dataset": "../../etc/passwd"}, {"w_dataset": "figure1"}), "ok",
             _check_link),
        Case(A, "?dataset= 100000 characters", _link({"dataset": "x" * 100_000}, {"w_dataset": "figure1"}), "ok",
             _check_link),
        Case(A, "?methods= 100000 characters", _link({"methods": "euclidean," + "a" * 100_000},
                                                     {"w_methods": ["euclidean"]}), "ok", _check_link),
        Case(A, "a fit over the cost cap", _cost_cap, "error", timeout=90),
        Case(A, "Stop during ARML, then resume", _stop_resume, "ok", _check_stop, timeout=180),
        Case(A, "page switch during a 3-method run", _page_switch, "ok", _check_switch, timeout=180),
        Case(A, "test-size change after training", _test_size, "ok", _check_test_size, timeout=120),
        Case(A, "uploaded data set stays in its session", _uploaded_data_private, "ok", _check_data_private,
             timeout=120),
        Case(A, "upload: LIBSVM index 2.5e9", _data_upload("big.libsvm", big_index, "feature"), "error",
             timeout=90),
        Case(A, "upload: 10 x 5000-feature CSV, LMNN", _data_upload("wide.csv", wide, "features", ("lmnn",)),
             "error", timeout=120),
        Case(A, "upload: a single class", _data_upload("one.csv", rows(12, 2, label=lambda i: "a"), "class"),
             "error", timeout=90),
    ]
    return out

