"""The app's findings of the hardening issue, through AppTest: one test per finding, each
asserting the clear message or the preserved data (uploads stay in their session, a
tampered runs/ file is warned about and recomputed, hostile links fall back with a
notice, the cost cap, Stop and resume, a page switch during training, a test-size change
that retrains nothing).

Module state the app reads at import (``_shared.RUNS_DIR``, ``_training.MAX_FIT_S`` and
``AUTO_TRAIN_S``) is fixed by the first AppTest of the process, so the fixture sets the
module attributes themselves; one test reloads ``_training`` to check the environment
variable of the cost cap.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import re
import shutil
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_pages import _shared, _training
from arml_core.jobs import TrainingJob
from arml_core.persistence import cached_metric, metric_to_bytes

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["app_pages/train.py", "app_pages/boundaries.py", "app_pages/curves.py", "app_pages/examples.py",
         "app_pages/pairwise.py", "app_pages/reproduction.py"]
JOBS: list[TrainingJob] = []


class RecordedJob(TrainingJob):
    """The app's TrainingJob, remembered so a test can read its tasks and stop it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        JOBS.append(self)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A fresh runs/ folder, no auto-train (tests ask for what they train), the default cap."""
    path = tmp_path / "runs"
    monkeypatch.setenv("ARML_RUNS_DIR", str(path))
    monkeypatch.setattr(_shared, "RUNS_DIR", str(path))
    monkeypatch.setattr(_training, "AUTO_TRAIN_S", 0.0)
    monkeypatch.setattr(_training, "MAX_FIT_S", 600.0)
    monkeypatch.setattr(_training, "TrainingJob", RecordedJob)
    monkeypatch.chdir(ROOT)
    JOBS.clear()
    yield path
    for j in JOBS:  # no fit outlives its test
        j.stop()
        j.wait(60)


def session() -> AppTest:
    return AppTest.from_file(APP, default_timeout=180)


def charts(at):
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def trace_names(at) -> set:
    return {t.get("name") for spec in charts(at) for t in spec["data"]}


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def select(at, dataset="iris", n_test=20, methods=("euclidean",), epochs=None) -> AppTest:
    """Set the sidebar (and ARML's epochs) through the widgets, as a user would."""
    at.run()
    at.selectbox(key="w_dataset").set_value(dataset).run()
    at.number_input(key="w_n_test").set_value(n_test).run()
    at.multiselect(key="w_methods").set_value(list(methods)).run()
    if epochs is not None:
        at.number_input(key="t_epochs").set_value(epochs).run()
    assert not at.exception, at.exception
    return at


def runs_files(runs: Path) -> dict:
    """name -> (size, mtime) of every metric file in runs/ (not the checkpoints)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in runs.glob("*.np*")} if runs.is_dir() else {}


def rec_of(at, method: str) -> dict:
    hits = [rec for (_, m, _), rec in at.session_state["metrics"].items() if m == method]
    assert len(hits) == 1, f"{len(hits)} session entries for {method}"
    return hits[0]


def upload_metric(at, name: str, G) -> AppTest:
    at.file_uploader(key="t_upload").upload(name, metric_to_bytes(G, {"method": "whatever"})).run()
    at.button(key="t_load").click().run()
    return at


@contextlib.contextmanager
def leave_while_training(monkeypatch):
    """The script run that starts a fit ends at its first progress poll, while the fit goes on:
    what a page switch or a closed tab does to the run that was following it."""
    import streamlit as st

    monkeypatch.setattr(_training, "time", types.SimpleNamespace(sleep=lambda s: st.stop()))
    try:
        yield
    finally:
        monkeypatch.setattr(_training, "time", time)


# -- shared state and provenance ------------------------------------------------------------
IRIS_G = np.diag([1.0, 2.0, 0.5, 1.5])


def test_uploaded_metric_stays_in_its_session(runs):
    at = select(session())
    before = runs_files(runs)
    upload_metric(at, "mine.npz", IRIS_G)
    assert not at.exception and not at.error, texts(at.error)
    assert "Upload: mine.npz (exact)" in trace_names(at)
    assert runs_files(runs) == before  # nothing written to runs/
    assert not any("upload" in p.name.lower() or "mine" in p.name for p in runs.rglob("*"))
    # a second session on the same server and runs/ sees nothing of it
    other = select(session())
    assert not other.exception
    assert not any("Upload" in (n or "") for n in trace_names(other))
    assert other.session_state["uploaded_metrics"] == {}
    assert all(not str(o).startswith("upload:") for o in other.selectbox(key="t_dl_pick").options)


def test_loading_a_metric_says_it_is_for_this_session_only(runs):
    at = upload_metric(select(session()), "mine.npz", IRIS_G)
    assert "Upload: mine.npz (exact)" in trace_names(at)
    assert any("for this session only" in s.value for s in at.success), texts(at.success)


def test_huge_upload_is_refused_with_the_range_and_no_page_breaks(runs):
    at = select(session())
    upload_metric(at, "huge.npz", 1e160 * np.eye(4))
    assert not at.exception
    assert any("outside the range" in e.value and "rescale" in e.value for e in at.error), texts(at.error)
    assert at.session_state["uploaded_metrics"] == {}
    assert runs_files(runs) == {}
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not any("Upload" in (n or "") for n in trace_names(at)), page
    fresh = select(session())
    for page in PAGES[:5]:
        fresh.switch_page(page).run()
        assert not fresh.exception, (page, fresh.exception)


def test_plain_upload_is_labelled_and_keeps_the_trained_method(runs):
    at = select(session(), methods=["euclidean", "lfda"])
    at.button(key="t_train").click().run()
    lfda = rec_of(at, "lfda")
    G_trained = np.array(lfda["G"])
    (lfda_file,) = runs.glob("*__lfda__*.npz")
    digest = hashlib.sha256(lfda_file.read_bytes()).hexdigest()
    upload_metric(at, "lfda.npz", IRIS_G)  # named like the method: still an upload
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert {"LFDA", "Upload: lfda.npz"} <= set(table.index)
    assert table.loc["LFDA", "source"] == "trained"
    assert "this session only" in table.loc["Upload: lfda.npz", "source"]
    assert {"LFDA (exact)", "Upload: lfda.npz (exact)"} <= trace_names(at)
    np.testing.assert_array_equal(rec_of(at, "lfda")["G"], G_trained)
    assert hashlib.sha256(lfda_file.read_bytes()).hexdigest() == digest
    assert len(list(runs.glob("*.npz"))) == 1


def test_an_uploaded_data_set_stays_in_its_session(runs):
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    payload = "\n".join(",".join(f"{v:.4f}" for v in row) + f",{int(row[0] > 0.5)}" for row in X).encode()
    at = session().run()
    at.file_uploader(key="w_upload").upload("private.csv", payload, "text/csv").run()
    assert at.selectbox(key="w_dataset").value == "upload:private.csv"
    at.multiselect(key="w_methods").set_value(["euclidean", "lfda"]).run()
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "LFDA (exact)" in trace_names(at)
    assert runs_files(runs) == {}  # its metrics stay in the session too
    other = session().run()
    assert not any("private" in o for o in other.selectbox(key="w_dataset").options)


def _rewrite(path: Path, G, meta) -> None:
    buf = io.BytesIO()
    np.savez(buf, components=np.asarray(G, dtype=np.float64), metadata=np.array(json.dumps(meta)))
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("tamper, reason", [
    ("metadata a list", "not an object"),
    ("fit_time_s text", "not a number of seconds"),
    ("LFDA metric under ARML's key", "records method 'lfda'"),
])
def test_tampered_runs_metadata_is_warned_about_and_recomputed(runs, tamper, reason):
    at = select(session(), methods=["euclidean", "lfda", "arml"], epochs=30)
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error
    (arml_file,) = runs.glob("*__arml__*.npz")
    (lfda_file,) = runs.glob("*__lfda__*.npz")
    G_arml = np.array(rec_of(at, "arml")["G"])
    meta = json.loads(str(np.load(arml_file)["metadata"]))
    if tamper == "metadata a list":
        _rewrite(arml_file, G_arml, [1, 2])
    elif tamper == "fit_time_s text":
        _rewrite(arml_file, G_arml, {**meta, "fit_time_s": "abc"})
    else:
        shutil.copyfile(lfda_file, arml_file)
    other = select(session(), methods=["euclidean", "lfda", "arml"], epochs=30)
    assert not other.exception, other.exception
    shown = texts(other.warning)
    assert any("ignoring the saved run" in w and "recomputing" in w and reason in w for w in shown), shown
    assert other.button(key="t_train").label.startswith("Train ARML")  # the file was not used
    assert rec_of(other, "lfda")["source"] == "runs/"  # the untouched file still is
    other.button(key="t_train").click().run()
    assert not other.exception and not other.error
    arml = rec_of(other, "arml")
    assert arml["source"] == "trained"
    np.testing.assert_allclose(arml["G"], G_arml)  # the same seeded fit again, not LFDA's metric
    (key,) = [k for k in other.session_state["metrics"] if k[1] == "arml"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file reads back cleanly
        G, saved = cached_metric(runs, key[0], "arml", arml["settings"], 4)
    assert saved["method"] == "arml" and np.allclose(G, G_arml)


# -- links ----------------------------------------------------------------------------------
def test_k_zero_in_the_link_is_a_notice_and_the_box_shows_1(runs):
    at = session()
    at.query_params.update({"dataset": "iris", "K": "0", "n_test": "20"})
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    assert any(i.value.startswith("From the link: K=0 is out of range: using 1") for i in at.info), texts(at.info)
    assert at.number_input(key="w_K").value == 1
    assert at.session_state["sel"]["K"] == 1


def test_repeated_method_in_the_link_trains_it_once(runs, monkeypatch):
    at = session()
    at.query_params.update({"dataset": "iris", "n_test": "20", "methods": "arml,arml,arml", "t_epochs": "30"})
    at.run()  # a copied link trains what it shows by itself
    assert not at.exception and not at.error, texts(at.error)
    assert at.multiselect(key="w_methods").value == ["arml"]
    assert [t.method for j in JOBS for t in j.tasks] == ["arml"]
    assert len(list(runs.glob("*__arml__*.npz"))) == 1
    assert sum(m == "arml" for (_, m, _) in at.session_state["metrics"]) == 1
    assert list(at.dataframe[0].value.index) == ["ARML"]


LONG = "9" * 5000


@pytest.mark.parametrize("params, notice, field, expected", [
    ({"n_test": "-5"}, "n_test=-5 is out of range: using 0", "w_n_test", 0),
    ({"seed": "abc"}, "seed='abc' is not a whole number: using 42", "w_seed", 42),
    ({"seed": LONG}, "is not a whole number: using 42", "w_seed", 42),
    ({"n_train": LONG[:30]}, "is out of range: using 10000000", None, None),
    ({"dataset": "../../etc/passwd"}, "'../../etc/passwd' is not available here; showing figure1", "w_dataset",
     "figure1"),
    ({"dataset": "x" * 100_000}, "is not available here; showing figure1", "w_dataset", "figure1"),
    ({"methods": "euclidean," + "a" * 100_000}, "unknown method(s)", "w_methods", ["euclidean"]),
])
def test_hostile_link_parameters_fall_back_with_a_notice(runs, params, notice, field, expected):
    at = session()
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    notes = [e.value for e in [*at.info, *at.warning] if "From the link" in e.value or "not available" in e.value]
    assert any(notice in n for n in notes), notes
    assert all(len(n) < 400 for n in notes)  # a notice quotes the value, it does not reprint it
    if field == "w_methods":
        assert at.multiselect(key=field).value == expected
    elif field == "w_dataset":
        assert at.selectbox(key=field).value == expected
    elif field is not None:
        assert at.number_input(key=field).value == expected


# -- resources ------------------------------------------------------------------------------
def _refused(at) -> str:
    msgs = [e.value for e in at.error if "over this server's limit" in e.value]
    assert len(msgs) == 1, texts(at.error)
    return msgs[0]


def test_a_fit_over_the_cost_cap_is_refused_with_the_limit_and_the_way_past_it(runs, monkeypatch):
    monkeypatch.setattr(_training, "MAX_FIT_S", 0.05)
    at = select(session(), methods=["euclidean", "arml"])
    at.button(key="t_train").click().run()
    assert not at.exception
    msg = _refused(at)
    assert "ARML" in msg and "ARML_MAX_FIT_SECONDS" in msg and "python -m arml_core train" in msg
    assert "0 s per fit" in msg  # the limit itself
    assert JOBS == [] and not list(runs.glob("*.npz"))
    assert "Euclidean (exact)" in trace_names(at)  # what needs no fit is still shown


def test_the_cost_cap_is_read_from_the_environment(runs, monkeypatch):
    monkeypatch.setenv("ARML_MAX_FIT_SECONDS", "0.05")
    try:
        importlib.reload(_training)
        monkeypatch.setattr(_training, "AUTO_TRAIN_S", 0.0)
        monkeypatch.setattr(_training, "TrainingJob", RecordedJob)
        assert _training.MAX_FIT_S == 0.05
        at = select(session(), methods=["arml"])
        at.button(key="t_train").click().run()
        assert not at.exception
        assert "ARML_MAX_FIT_SECONDS" in _refused(at) and JOBS == []
    finally:
        monkeypatch.delenv("ARML_MAX_FIT_SECONDS")
        importlib.reload(_training)


def _wait_for(predicate, seconds=60.0):
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_stop_ends_a_running_arml_fit_and_train_resumes_it(runs, monkeypatch):
    at = select(session(), methods=["arml"], epochs=3000)
    with leave_while_training(monkeypatch):
        at.button(key="t_train").click().run()
    assert not at.exception
    (job,) = JOBS
    assert job.running
    stop = at.button(key=f"stop_{id(job)}_main")  # the box the run drew before it ended
    _wait_for(lambda: (job.state("arml").fraction or 0) >= 0.02)  # a few epochs done
    stop.click().run()  # the Stop button of the training box: the fit ends at the next epoch
    assert not at.exception
    assert job.wait(60)
    state = job.state("arml")
    assert state.status == "stopped" and "stopped at epoch" in state.message, state
    assert any("ARML was stopped" in w.value and "resume" in w.value for w in at.warning), texts(at.warning)
    assert not list(runs.glob("*__arml__*.npz"))  # nothing half-trained is stored
    assert list((runs / "checkpoints").glob("arml-*.pt"))
    label = at.button(key="t_train").label
    assert label.startswith("Resume ARML"), label
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error, texts(at.error)
    info = rec_of(at, "arml")["info"]
    assert info["resumed_from"] > 0 and info["n_iter"] == 3000
    assert len(list(runs.glob("*__arml__*.npz"))) == 1


def test_a_page_switch_during_training_loses_nothing(runs, monkeypatch):
    at = select(session(), methods=["euclidean", "lfda", "nca", "arml"], epochs=600)
    with leave_while_training(monkeypatch):
        at.button(key="t_train").click().run()
    (job,) = JOBS
    assert job.running  # the switch below happens mid-run
    at.switch_page("app_pages/curves.py").run()  # follows the run in the sidebar until it ends
    assert not at.exception and not at.error, texts(at.error)
    assert not job.running and all(s.status == "done" for s in job.states())
    names = trace_names(at)
    assert {"Euclidean (exact)", "LFDA (exact)", "NCA (exact)", "ARML (exact)"} <= names, names
    assert {m for (_, m, _) in at.session_state["metrics"]} == {"euclidean", "lfda", "nca", "arml"}
    assert {p.name.split("__")[1] for p in runs.glob("*.npz")} == {"lfda", "nca", "arml"}
    at.switch_page("app_pages/train.py").run()
    assert at.button(key="t_train").label == "Retrain all"


def test_changing_the_test_size_reuses_the_trained_metrics(runs):
    at = select(session(), methods=["euclidean", "lfda", "arml"], epochs=30)
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error
    before = {m: rec_of(at, m) for m in ("lfda", "arml")}
    G_ids = {m: id(r["G"]) for m, r in before.items()}
    times = {m: r["fit_time"] for m, r in before.items()}
    files, n_jobs = runs_files(runs), len(JOBS)
    at.number_input(key="w_n_test").set_value(35).run()
    assert not at.exception and not at.error
    assert at.button(key="t_train").label == "Retrain all"
    after = {m: rec_of(at, m) for m in ("lfda", "arml")}
    assert {m: id(r["G"]) for m, r in after.items()} == G_ids
    assert {m: r["fit_time"] for m, r in after.items()} == times
    assert len(JOBS) == n_jobs and runs_files(runs) == files
    table = at.dataframe[0].value
    assert table.loc["ARML", "fit time (s)"] == round(times["arml"], 2)
    # and a fresh session on the other test size reads the same metrics from runs/
    other = select(session(), methods=["euclidean", "lfda", "arml"], n_test=35, epochs=30)
    assert rec_of(other, "arml")["source"] == "runs/"
    np.testing.assert_array_equal(rec_of(other, "arml")["G"], before["arml"]["G"])
