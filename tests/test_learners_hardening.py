"""No input, parameter or interruption gives a learner a traceback, a silent wrong
number or a lost fit: degenerate data, bad parameters, checkpoints and resume, and a
metric-learn fit stopped from another thread."""
from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from arml_core.data import load_dataset
from arml_core.learners import (ARML, LEARNERS, PARAMETERS, CheckpointWarning, FitStopped, SpectralDefence,
                                baseline_class, fit_in_subprocess, make_learner)
from arml_core.learners.registry import parameter_names

FAST = {"arml": {"n_epochs": 5}, "spectral": {"n_epochs": 5, "device": "cpu"}, "lmnn": {"max_iter": 20},
        "nca": {"max_iter": 20}, "itml": {"max_iter": 50}}


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", seed=0)


def _cases():
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 3)), np.arange(30) % 3
    y_one = y.copy()
    y_one[0] = 5
    X_const = X.copy()
    X_const[:, 1] = 0.5
    X_nan, X_inf = X.copy(), X.copy()
    X_nan[2, 1], X_inf[4, 0] = np.nan, np.inf
    return {
        "one class": (X, np.zeros(30)),
        "a class of one point": (X, y_one),
        "every class one point": (X, np.arange(30)),
        "a constant feature": (X_const, y),
        "identical points": (np.ones((30, 3)), y),
        "NaN": (X_nan, y),
        "inf": (X_inf, y),
        "no rows": (np.empty((0, 3)), np.empty(0)),
        "no features": (np.empty((30, 0)), y),
        "one feature": (X[:, :1], y),
        "huge values": (X * 1e150, y),
    }


CASES = _cases()
SINGLE_POINT_CLASSES = r"a class with at least two points|every class has a single point"
# (case, learner) -> the ValueError expected; anything missing must fit a finite metric
EXPECTED = {
    **{("one class", k): "at least 2 classes" for k in LEARNERS if k != "euclidean"},
    ("a class of one point", "lmnn"): r"n_neighbors \+ 1 = 4 points in every class.*class 5 has 1",
    **{("every class one point", k): SINGLE_POINT_CLASSES for k in ("nca", "lmnn", "itml", "lfda", "arml")},
    **{("identical points", k): "training points are identical" for k in LEARNERS if k != "euclidean"},
    **{("NaN", k): r"1 NaN or infinite value\(s\), the first in row 2, column 1" for k in LEARNERS},
    **{("inf", k): r"NaN or infinite value\(s\), the first in row 4, column 0" for k in LEARNERS},
    **{("no rows", k): "0 sample" for k in LEARNERS},
    **{("no features", k): "0 feature" for k in LEARNERS},
    **{("huge values", k): "rescale the features" for k in LEARNERS if k != "euclidean"},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(LEARNERS))
def test_degenerate_data_is_a_clear_error_or_a_finite_metric(name, case):
    X, y = CASES[case]
    est = make_learner(name, **FAST.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if (case, name) in EXPECTED:
            with pytest.raises(ValueError, match=EXPECTED[case, name]):
                est.fit(X, y)
            return
        est.fit(X, y)
    G = np.asarray(est.components_)
    assert G.shape[1] == X.shape[1] and np.all(np.isfinite(G)) and not np.iscomplexobj(G)


# -- ITML ----------------------------------------------------------------------------------------
def test_itml_on_duplicated_points_with_conflicting_labels_fits_the_feasible_pairs():
    """metric-learn: "The input metric should be symmetric." (its matrix turned NaN: a
    dissimilar pair of identical points asks for a distance no metric gives)."""
    import metric_learn

    rng = np.random.default_rng(0)
    X, y = np.repeat(rng.random((10, 3)), 4, axis=0), np.tile([0, 1], 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValueError, match="symmetric"):
            metric_learn.ITML_Supervised(random_state=0).fit(X, y)
        with pytest.warns(UserWarning, match="identical points with different labels, which no metric can separate"):
            G = make_learner("itml").fit(X, y).components_
    assert np.all(np.isfinite(G))
    # nine of ten points of each class coincide: the two pairs drawn with this seed join such points
    X = np.zeros((20, 2))
    X[0] = 1
    with pytest.raises(ValueError, match="every dissimilar pair ITML drew joins two identical points"):
        make_learner("itml", n_constraints=2, random_state=0).fit(X, np.r_[np.zeros(10), np.ones(10)])


def test_itml_is_metric_learns_on_clean_data_and_keeps_negative_and_string_labels(iris):
    import metric_learn

    X, y = iris.X_train, iris.y_train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ours = make_learner("itml", max_iter=50).fit(X, y).components_
        ref = metric_learn.ITML_Supervised(max_iter=50, random_state=42).fit(X, y).components_
        np.testing.assert_array_equal(ours, ref)
        # metric-learn reads a negative label as "unlabelled" and cannot read strings
        for labels in (np.array([-1, 5, 7])[y], np.array(["a", "b", "c"])[y]):
            np.testing.assert_array_equal(make_learner("itml", max_iter=50).fit(X, labels).components_, ref)


def test_itml_covariance_prior_on_rank_deficient_data_says_why(iris):
    X = np.c_[iris.X_train, iris.X_train[:, 0] + iris.X_train[:, 1]]
    with pytest.raises(ValueError, match="ITML cannot be fitted on this data: .*covariance"):
        make_learner("itml", prior="covariance").fit(X, iris.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert np.all(np.isfinite(make_learner("itml", max_iter=50).fit(X, iris.y_train).components_))


# -- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(PARAMETERS))
def test_every_metric_learn_parameter_is_checked(key):
    assert set(PARAMETERS[key]) == set(parameter_names(baseline_class(key)))


@pytest.mark.parametrize(
    "key, params, match",
    [
        ("itml", {"max_iter": -1}, "bad parameter for ITML: max_iter must be a positive integer, got -1"),
        ("itml", {"max_iter": 0}, "bad parameter for ITML: max_iter must be a positive integer, got 0"),
        ("itml", {"gamma": 0}, "gamma must be a positive number"),
        ("itml", {"tol": -1e-3}, "tol must be a non-negative number"),
        ("itml", {"n_constraints": 0}, "n_constraints must be a positive integer"),
        ("itml", {"prior": "pca"}, "prior must be one of 'identity', 'covariance', 'random'"),
        ("itml", {"foo": 1}, "bad parameter for ITML: it has no parameter 'foo'; its parameters are gamma"),
        ("nca", {"max_iter": "10"}, "bad parameter for NCA: max_iter must be a positive integer, got '10'"),
        ("nca", {"n_components": 0}, "n_components must be a positive integer"),
        ("nca", {"init": "foo"}, "init must be one of"),
        ("nca", {"random_state": -1}, "random_state must be None, an integer"),
        ("nca", {"preprocessor": np.eye(2)}, "preprocessor must be left at None"),
        ("lmnn", {"n_neighbors": 0}, "bad parameter for LMNN: n_neighbors must be a positive integer"),
        ("lmnn", {"learn_rate": float("nan")}, "learn_rate must be a positive number"),
        ("lmnn", {"regularization": 1.5}, "regularization must be a number between 0 and 1"),
        ("lmnn", {"min_iter": -1}, "min_iter must be a non-negative integer"),
        ("lmnn", {"verbose": -1}, "verbose must be a non-negative integer"),
        ("lfda", {"k": 0}, "bad parameter for LFDA: k must be a positive integer"),
        ("lfda", {"embedding_type": "x"}, "embedding_type must be one of 'weighted', 'orthonormalized', 'plain'"),
        ("euclidean", {"k": 1}, "bad parameter for Euclidean: it has no parameter 'k'; it takes none"),
        ("arml", {"callback": 3}, "callback must be a function"),
        ("arml", {"checkpoint_every": 5}, "checkpoint_every is set but checkpoint is None"),
        ("arml", {"checkpoint": "/no/such/folder/ck.pt"}, "does not exist"),
        ("spectral", {"random_state": "x"}, "bad parameter for Spectral defence: random_state must be"),
    ],
)
def test_bad_parameters_are_named_by_make_learner(key, params, match):
    with pytest.raises(ValueError, match=match):
        make_learner(key, **params)


def test_n_components_above_n_features_is_checked_in_fit(iris):
    for key in ("nca", "lmnn", "lfda"):
        with pytest.raises(ValueError, match=r"n_components \(9\) cannot be greater than n_features \(4\)"):
            make_learner(key, n_components=9).fit(iris.X_train, iris.y_train)


def test_checked_learners_pickle(iris):
    est = make_learner("lfda").fit(iris.X_train, iris.y_train)
    back = pickle.loads(pickle.dumps(est))
    assert type(back) is type(est)
    np.testing.assert_array_equal(back.components_, est.components_)


# -- checkpoints ---------------------------------------------------------------------------------
def _interrupted_then_resumed(cls, X, y, path, stop_at, **kw):
    first = cls(checkpoint=path, callback=lambda e, loss: e < stop_at, **kw).fit(X, y)
    assert first.n_iter_ == stop_at and path.exists()
    return cls(checkpoint=path, **kw).fit(X, y)


@pytest.mark.parametrize("cls, kw", [
    (ARML, {"n_epochs": 60, "batch_size": 16, "resample_every": 3, "device": "cpu"}),
    (ARML, {"n_epochs": 60, "n_candidates": 3, "device": "cpu"}),
    (SpectralDefence, {"n_epochs": 60, "n_pairs": 200, "device": "cpu"}),
])
def test_a_resumed_fit_is_bit_identical_to_an_uninterrupted_one(cls, kw, iris, tmp_path):
    X, y = iris.X_train, iris.y_train
    ref = cls(random_state=0, **kw).fit(X, y)
    path = tmp_path / "fit.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        est = _interrupted_then_resumed(cls, X, y, path, 37, random_state=0, checkpoint_every=10, **kw)
    assert est.resumed_from_ == 37 and est.n_iter_ == 60 and est.stop_reason_ == "completed"
    np.testing.assert_array_equal(est.components_, ref.components_)
    assert est.loss_curve_ == ref.loss_curve_
    for name in cls._extra_curves:
        assert getattr(est, f"{name}_curve_") == getattr(ref, f"{name}_curve_")
    if cls is ARML:
        assert est.n_neighbour_searches_ == ref.n_neighbour_searches_
    assert not path.exists()  # a finished fit leaves no checkpoint


def test_a_crashed_fit_resumes_from_its_last_periodic_checkpoint(iris, tmp_path):
    X, y = iris.X_train, iris.y_train
    kw = {"n_epochs": 40, "batch_size": 32, "random_state": 3, "device": "cpu"}
    ref = ARML(**kw).fit(X, y)
    path = tmp_path / "arml.ckpt"

    def crash(epoch, loss):
        if epoch == 23:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ARML(checkpoint=path, checkpoint_every=10, callback=crash, **kw).fit(X, y)
    est = ARML(checkpoint=path, checkpoint_every=10, **kw).fit(X, y)
    assert est.resumed_from_ == 20
    np.testing.assert_array_equal(est.components_, ref.components_)
    assert est.loss_curve_ == ref.loss_curve_


def test_a_checkpoint_of_another_fit_is_ignored_with_a_warning(iris, tmp_path):
    X, y = iris.X_train, iris.y_train
    kw = {"n_epochs": 20, "device": "cpu"}
    path = tmp_path / "arml.ckpt"
    ARML(checkpoint=path, callback=lambda e, loss: e < 7, random_state=0, **kw).fit(X, y)
    for other, why in [({"random_state": 1}, "random_state"), ({"random_state": 0, "learning_rate": 2e-3}, "params")]:
        ref = ARML(**other, **kw).fit(X, y)
        ARML(checkpoint=path, callback=lambda e, loss: e < 7, random_state=0, **kw).fit(X, y)
        with pytest.warns(CheckpointWarning, match=f"ignored: it was written by a fit with another {why}"):
            est = ARML(checkpoint=path, **other, **kw).fit(X, y)
        assert est.resumed_from_ == 0
        np.testing.assert_array_equal(est.components_, ref.components_)
    ARML(checkpoint=path, callback=lambda e, loss: e < 7, random_state=0, **kw).fit(X, y)
    with pytest.warns(CheckpointWarning, match="another data"):
        ARML(checkpoint=path, random_state=0, **kw).fit(X[:-1], y[:-1])


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled')",))


@pytest.mark.parametrize("content, match", [
    (b"not a checkpoint", "cannot be read"),
    (pickle.dumps(_Boom()), "cannot be read"),
    (None, "not a checkpoint of this version"),
    (b"x" * (4 << 20), "more than a checkpoint of this fit can"),
], ids=["garbage", "pickle running code", "another format", "too large"])
def test_an_unreadable_or_hostile_checkpoint_is_ignored(content, match, iris, tmp_path):
    path = tmp_path / "arml.ckpt"
    if content is None:
        torch.save({"format": 99}, path)
    else:
        path.write_bytes(content)
    with pytest.warns(CheckpointWarning, match=match):
        est = ARML(n_epochs=5, checkpoint=path, random_state=0, device="cpu").fit(iris.X_train, iris.y_train)
    assert est.resumed_from_ == 0 and est.n_iter_ == 5


def test_a_tampered_checkpoint_is_checked_before_use(iris, tmp_path):
    X, y = iris.X_train, iris.y_train
    kw = {"n_epochs": 20, "random_state": 0, "device": "cpu"}
    path = tmp_path / "arml.ckpt"
    ARML(checkpoint=path, callback=lambda e, loss: e < 7, **kw).fit(X, y)
    saved = torch.load(path, weights_only=True)
    saved["learner"]["p_idx"] = saved["learner"]["p_idx"] + 10_000  # indices outside the data
    torch.save(saved, path)
    with pytest.warns(CheckpointWarning, match="p_idx holds indices outside"):
        est = ARML(checkpoint=path, **kw).fit(X, y)
    np.testing.assert_array_equal(est.components_, ARML(**kw).fit(X, y).components_)


# -- a metric-learn fit stopped from another thread ----------------------------------------------
def _no_fit_process_left():
    return not [p for p in multiprocessing.active_children() if p.name.startswith("arml-fit")]


@pytest.mark.parametrize("key, kw", [("lmnn", {"max_iter": 30}), ("itml", {"max_iter": 50}), ("lfda", {})])
def test_fit_in_subprocess_gives_the_in_process_fit(key, kw, iris):
    X, y = iris.X_train, iris.y_train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = make_learner(key, **kw).fit(X, y)
        seen = []
        est = fit_in_subprocess(make_learner(key, **kw), X, y, threading.Event(),
                                progress=lambda i, message: seen.append((i, message)))
    np.testing.assert_array_equal(est.components_, ref.components_)
    assert getattr(est, "n_iter_", None) == getattr(ref, "n_iter_", None)
    if key == "itml":
        assert any(isinstance(i, int) for i, _ in seen) and "itml" in seen[-1][1]
    assert _no_fit_process_left()


def test_a_long_lmnn_fit_stops_within_a_second_of_the_event():
    rng = np.random.default_rng(0)
    X, y = rng.random((1500, 20)), rng.integers(0, 3, 1500)
    stop, marks = threading.Event(), {}

    def progress(iteration, message):
        if iteration is not None and iteration >= 3 and not stop.is_set():
            marks["set"] = time.monotonic()
            stop.set()

    with pytest.raises(FitStopped, match="the LMNN fit was stopped after") as info:
        fit_in_subprocess(make_learner("lmnn", max_iter=10**6, convergence_tol=0.0), X, y, stop, progress=progress)
    assert info.value.reason == "stop" and time.monotonic() - marks["set"] < 1.0
    assert _no_fit_process_left()
    started = time.monotonic()
    with pytest.raises(FitStopped, match="did not finish within 0.5 s") as info:
        fit_in_subprocess(make_learner("lmnn", max_iter=10**6, convergence_tol=0.0), X, y, timeout=0.5)
    assert info.value.reason == "timeout" and time.monotonic() - started < 2.0
    assert _no_fit_process_left()


def test_fit_in_subprocess_passes_errors_back_and_refuses_what_cannot_cross(iris):
    X, y = iris.X_train, iris.y_train
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_in_subprocess(make_learner("lmnn"), X, np.zeros_like(y))
    with pytest.raises(ValueError, match="stops through its callback"):
        fit_in_subprocess(make_learner("arml"), X, y)
    with pytest.raises(ValueError, match="random_state must be an integer or None"):
        fit_in_subprocess(make_learner("nca", random_state=np.random.RandomState(0)), X, y)
    with pytest.raises(ValueError, match="fits the learners of make_learner"):
        fit_in_subprocess(object(), X, y)
    assert _no_fit_process_left()
