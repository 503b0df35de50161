"""Every learner held to the same contract, plus ARML's own properties."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from arml_core.data import load_dataset
from arml_core.learners import ARML, LEARNERS, Euclidean, _NeighbourIndex, make_learner, triplet_eps


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", seed=0)


FAST = {"arml": {"n_epochs": 30}, "lmnn": {"max_iter": 30}, "nca": {"max_iter": 30}, "itml": {"max_iter": 50}}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learner_contract(name, iris):
    X, y = iris.X_train, iris.y_train
    est = make_learner(name, **FAST.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    G = np.asarray(est.components_)
    assert G.ndim == 2 and G.shape[1] == X.shape[1]
    M = est.get_mahalanobis_matrix()
    np.testing.assert_allclose(M, G.T @ G, atol=1e-10)
    assert np.linalg.eigvalsh(M).min() > -1e-8 * max(1.0, np.abs(M).max())
    Z = est.transform(iris.X_test)
    np.testing.assert_allclose(Z, iris.X_test @ G.T, atol=1e-10)
    # distances in the transformed space are the explicit Mahalanobis distances
    a, b = iris.X_test[0], iris.X_test[1]
    np.testing.assert_allclose(np.sum((Z[0] - Z[1]) ** 2), (a - b) @ M @ (a - b), rtol=1e-8)
    np.testing.assert_allclose(est.get_metric()(a, b), np.sqrt((a - b) @ M @ (a - b)), rtol=1e-8)


@pytest.mark.parametrize("name", ["arml", "nca", "lmnn", "itml"])
def test_learner_deterministic(name, iris):
    fits = []
    for _ in range(2):
        est = make_learner(name, **FAST.get(name, {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(np.asarray(est.fit(iris.X_train, iris.y_train).components_))
    np.testing.assert_allclose(fits[0], fits[1], atol=1e-12)


def test_make_learner_errors():
    with pytest.raises(ValueError, match="unknown method 'foo'.*euclidean"):
        make_learner("foo")
    with pytest.raises(ValueError, match="bad parameter for ARML"):
        make_learner("arml", n_epoch=3)


def test_euclidean_is_identity(iris):
    np.testing.assert_array_equal(Euclidean().fit(iris.X_train).components_, np.eye(4))


# -- ARML ---------------------------------------------------------------------------------
def test_arml_increases_the_triplet_margin():
    ds = load_dataset("wine", seed=1)
    est = ARML(n_epochs=150, learning_rate=1e-2, random_state=0).fit(ds.X_train, ds.y_train)
    assert est.n_iter_ == 150 and len(est.loss_curve_) == 150
    # 'neg' loss is -mean eps: it must have gone down clearly
    assert np.mean(est.loss_curve_[-10:]) < est.loss_curve_[0] - 0.01


def test_arml_callback_and_early_stop(iris):
    seen = []
    ARML(n_epochs=7, random_state=0, callback=lambda e, l: seen.append((e, l))).fit(iris.X_train, iris.y_train)
    assert [e for e, _ in seen] == list(range(1, 8))
    assert all(np.isfinite(l) for _, l in seen)
    est = ARML(n_epochs=50, random_state=0, callback=lambda e, l: e < 3).fit(iris.X_train, iris.y_train)
    assert est.n_iter_ == 3 and "callback" in est.stop_reason_


def test_arml_verbose(iris, capsys):
    ARML(n_epochs=10, verbose=1, random_state=0).fit(iris.X_train, iris.y_train)
    out = capsys.readouterr().out
    assert "[ARML] epoch" in out and "10/10" in out


@pytest.mark.parametrize("loss", ["neg", "hinge", "exp", "logistic"])
def test_arml_losses_run_and_stay_finite(loss, iris):
    est = ARML(n_epochs=20, loss=loss, learning_rate=1e-2, random_state=0).fit(iris.X_train, iris.y_train)
    assert np.all(np.isfinite(est.components_))
    assert est.loss_curve_[-1] <= est.loss_curve_[0] + 1e-6


def test_arml_low_rank_and_minibatch(iris):
    est = ARML(n_components=2, n_epochs=10, batch_size=16, random_state=0).fit(iris.X_train, iris.y_train)
    assert est.components_.shape == (2, 4)
    assert est.transform(iris.X_test).shape == (len(iris.X_test), 2)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_epochs": 0}, "n_epochs must be a positive integer"),
        ({"learning_rate": -1}, "learning_rate must be a positive number"),
        ({"loss": "square"}, "loss must be one of"),
        ({"n_components": 9}, r"n_components \(9\) cannot be greater than n_features \(4\)"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_arml_bad_parameters(params, match, iris):
    with pytest.raises(ValueError, match=match):
        ARML(**params).fit(iris.X_train, iris.y_train)


def test_arml_single_class_and_nan():
    X = np.random.default_rng(0).random((20, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        ARML(n_epochs=2).fit(X, np.zeros(20))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ARML(n_epochs=2).fit(X, np.arange(20) % 2)


def test_arml_cuda_without_cuda_raises(iris):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ARML(n_epochs=2, device="cuda").fit(iris.X_train, iris.y_train)


def test_arml_divergence_keeps_last_finite_metric(iris):
    # an enormous learning rate drives G past float32's range: the loss turns NaN
    est = ARML(n_epochs=5, learning_rate=1e30, random_state=0)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        est.fit(iris.X_train, iris.y_train)
    assert not est.converged_ and np.all(np.isfinite(est.components_))
    assert "Lower learning_rate" in est.stop_reason_
    assert est.n_iter_ == len(est.loss_curve_) < 5


def test_triplet_eps_matches_closed_form():
    rng = np.random.default_rng(3)
    X, P, N = (rng.random((5, 4)) for _ in range(3))
    G = rng.normal(size=(3, 4))
    M = G.T @ G
    got = triplet_eps(*(torch.tensor(a) for a in (X, P, N)), torch.tensor(G)).numpy()
    for i in range(5):
        dn = (X[i] - N[i]) @ M @ (X[i] - N[i])
        dp = (X[i] - P[i]) @ M @ (X[i] - P[i])
        np.testing.assert_allclose(got[i], (dn - dp) / (2 * np.linalg.norm(M @ (P[i] - N[i]))), rtol=1e-10)


def _brute_neighbours(X, y, G, m):
    Z = X @ G.T
    d = ((Z[:, None] - Z[None]) ** 2).sum(-1)
    same = y[:, None] == y[None]
    d_pos = np.where(same, d, np.inf)
    np.fill_diagonal(d_pos, np.inf)
    d_neg = np.where(same, np.inf, d)
    return np.sort(d_pos, 1)[:, :m], np.sort(d_neg, 1)[:, :m]


def test_neighbour_index_is_exact_along_a_drifting_metric():
    """The shortlist index must return the exact m nearest at every step."""
    rng = np.random.default_rng(0)
    X = rng.random((150, 5))
    y = rng.integers(0, 3, 150)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    idx = _NeighbourIndex(Xt, yt, m=4, shortlist=8)
    G = np.eye(5)
    for step in range(40):
        G = G + 0.03 * rng.normal(size=(5, 5))
        pos, neg = idx.neighbours(torch.tensor(G))
        Z = X @ G.T
        d_pos = ((Z[:, None] - Z[pos.numpy()]) ** 2).sum(-1)
        d_neg = ((Z[:, None] - Z[neg.numpy()]) ** 2).sum(-1)
        ref_pos, ref_neg = _brute_neighbours(X, y, G, 4)
        np.testing.assert_allclose(np.sort(d_pos, 1), ref_pos, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.sort(d_neg, 1), ref_neg, rtol=1e-9, atol=1e-12)
        assert np.all(y[pos.numpy()] == y[:, None]) and np.all(y[neg.numpy()] != y[:, None])
        assert not np.any(pos.numpy() == np.arange(150)[:, None])
    # the shortlist saved work: far fewer full searches than steps
    assert idx.n_full_searches < 20


# scikit-learn's estimator checks, on a short ARML run. Checks that cannot apply:
# none are expected to fail; any exclusion would be listed here with its reason.
@parametrize_with_checks([ARML(n_epochs=5), Euclidean()])  # noqa: generator is sklearn's
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_lfda_on_images_with_constant_pixels_is_finite():
    """metric-learn's LFDA returns NaN on digits (constant border pixels make the
    within-class scatter singular); ours fits in the principal subspace instead."""
    ds = load_dataset("digits")
    assert np.any(np.ptp(ds.X_train, axis=0) == 0)
    est = make_learner("lfda").fit(ds.X_train, ds.y_train)
    G = est.components_
    assert G.shape[1] == ds.n_features and np.all(np.isfinite(G)) and not np.iscomplexobj(G)
    assert est.projected_rank_ < ds.n_features
    # constant pixels get no weight; the learned metric classifies well
    assert np.allclose(G[:, np.ptp(ds.X_train, axis=0) == 0], 0)
    from arml_core.knn import MahalanobisKNN

    err = np.mean(MahalanobisKNN(G.T @ G, 1).fit(ds.X_train, ds.y_train).predict(ds.X_test) != ds.y_test)
    assert err < 0.1


def test_lfda_on_well_conditioned_data_is_metric_learns():
    import metric_learn

    ds = load_dataset("wine")
    ours = make_learner("lfda").fit(ds.X_train, ds.y_train).components_
    ref = metric_learn.LFDA().fit(ds.X_train, ds.y_train).components_
    np.testing.assert_allclose(ours, ref)


@pytest.mark.parametrize("name", [k for k in LEARNERS if k != "euclidean"])
def test_every_learner_refuses_one_class_alike(name, iris):
    # LMNN used to fail with a TypeError inside metric-learn, NCA and LFDA to fit silently
    with pytest.raises(ValueError, match="metric learning needs at least 2 classes, the labels hold 1"):
        make_learner(name, **FAST.get(name, {})).fit(iris.X_train, np.zeros_like(iris.y_train))


@pytest.mark.parametrize("name", ["nca", "lmnn", "itml", "lfda"])
def test_make_learner_checks_metric_learn_parameters(name):
    with pytest.raises(ValueError, match=f"bad parameter for {LEARNERS[name]}: it has no parameter 'bogus'"):
        make_learner(name, bogus=1)
    with pytest.raises(ValueError, match=f"bad parameter for {LEARNERS[name]}: n_co\\w+ must be a positive integer"):
        make_learner(name, **({"n_constraints": -1} if name == "itml" else {"n_components": -1}))
