"""Training in a background thread that can be stopped (arml_core.jobs)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from arml_core import jobs, load_dataset
from arml_core.jobs import FitTask, TrainingJob, fit_estimate


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_train=120, n_test=20, seed=0)


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_each_metric_is_handed_over_as_it_finishes(moons):
    done = []
    job = TrainingJob(moons, [FitTask("euclidean", "euclidean"), FitTask("lfda", "lfda")],
                      lambda t, G, s, info: done.append((t.key, G.shape, time.monotonic())))
    assert [s.status for s in job.states()] == ["queued", "queued"]
    job.start()
    assert job.wait(120)
    assert [d[0] for d in done] == ["euclidean", "lfda"]
    assert all(shape == (2, 2) for _, shape, _ in done)
    assert [s.status for s in job.states()] == ["done", "done"]
    assert all(s.fraction == 1.0 and "trained in" in s.message for s in job.states())


def test_stop_ends_arml_between_epochs_and_skips_the_rest(moons, tmp_path):
    done = []
    params = {"n_epochs": 100000, "learning_rate": 1e-2, "checkpoint": str(tmp_path / "ck.pt"), "checkpoint_every": 5}
    job = TrainingJob(moons, [FitTask("arml", "arml", params), FitTask("lfda", "lfda")],
                      lambda t, G, s, info: done.append(t.key)).start()
    assert wait_for(lambda: "epoch 10/" in job.state("arml").message or
                    (job.state("arml").fraction or 0) * 100000 >= 10)
    t0 = time.monotonic()
    job.stop()
    assert job.wait(30)
    assert time.monotonic() - t0 < 10
    arml, lfda = job.states()
    assert arml.status == "stopped" and "stopped at epoch" in arml.message
    assert lfda.status == "stopped" and "not started" in lfda.message
    assert done == []
    assert (tmp_path / "ck.pt").exists()  # kept: a later fit resumes from it


def test_a_metric_learn_fit_over_its_time_limit_is_ended(monkeypatch):
    monkeypatch.setattr(jobs, "SUBPROCESS_AFTER_S", 0.0)
    rng = np.random.default_rng(0)
    big = load_dataset("moons", n_train=120, n_test=20, seed=0)
    X = rng.normal(size=(800, 40))
    big = dataclasses.replace(big, X_train=X, y_train=(X[:, 0] + 0.3 * rng.normal(size=800) > 0).astype(int))
    job = TrainingJob(big, [FitTask("lmnn", "lmnn", {"max_iter": 100000})], lambda *a: None,
                      timeout=lambda task, estimate: 1.5).start()
    assert job.wait(60)
    (s,) = job.states()
    assert s.status == "stopped" and "did not finish within" in s.message
    assert s.elapsed_s < 30


def test_a_failing_fit_is_that_tasks_message_and_the_next_one_runs(moons):
    job = TrainingJob(moons, [FitTask("nca", "nca", {"max_iter": -1}), FitTask("euclidean", "euclidean")],
                      lambda *a: None).start()
    assert job.wait(60)
    bad, ok = job.states()
    assert bad.status == "failed" and "max_iter" in bad.message
    assert ok.status == "done"


def test_estimate_scales_with_arml_epochs():
    a = fit_estimate("arml", {"n_epochs": 300}, 500, 10)
    b = fit_estimate("arml", {"n_epochs": 3000}, 500, 10)
    assert b == pytest.approx(10 * a)
    assert fit_estimate("upload", {}, 500, 10) == 0.0
