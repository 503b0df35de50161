"""Certified radii against an independent brute-force transcription of the bound."""
from __future__ import annotations

import numpy as np
import pytest

from arml_core.robustness.certify import certified_radii, certified_radii_bruteforce
from arml_core.knn import MahalanobisKNN
from arml_core.metric import metric_from_components


def _problem(seed, n_classes, d=5, n=90, n_test=25, rank=None):
    rng = np.random.default_rng(seed)
    centers = rng.random((n_classes, d))
    y = rng.integers(0, n_classes, n)
    y[:n_classes * 11] = np.repeat(np.arange(n_classes), 11)  # every class >= 11 points
    X = centers[y] + 0.25 * rng.normal(size=(n, d))
    yt = rng.integers(0, n_classes, n_test)
    Xt = centers[yt] + 0.25 * rng.normal(size=(n_test, d))
    G = rng.normal(size=(rank or d, d))
    return X, y, Xt, yt, metric_from_components(G)


@pytest.mark.parametrize("K", [1, 3, 5, 11])
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("rank", [None, 2])
def test_matches_bruteforce(K, n_classes, rank):
    X, y, Xt, yt, M = _problem(K * 10 + n_classes + (rank or 0), n_classes, rank=rank)
    ref = certified_radii_bruteforce(X, y, Xt, yt, M, K)
    assert (ref > 0).sum() >= 3  # the problem is not degenerate
    for method in ("pruned", "cached", "naive"):
        got = certified_radii(X, y, Xt, yt, M, K, method=method, device="cpu")
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-9, err_msg=method)


def test_chunked_memory_path_gives_the_same_answer():
    X, y, Xt, yt, M = _problem(7, 3)
    ref = certified_radii(X, y, Xt, yt, M, 5)
    for method in ("pruned", "cached", "naive"):
        tiny = certified_radii(X, y, Xt, yt, M, 5, method=method, memory_budget=64)
        np.testing.assert_allclose(tiny, ref, rtol=1e-12, atol=0)


def test_misclassified_points_get_zero_and_others_positive():
    X, y, Xt, yt, M = _problem(3, 2)
    r = certified_radii(X, y, Xt, yt, M, 3)
    pred = MahalanobisKNN(M, 3).fit(X, y).predict(Xt)
    assert np.all(r[pred != yt] == 0)
    assert np.all(r[pred == yt] >= 0)


def test_invariant_to_scaling_the_metric():
    X, y, Xt, yt, M = _problem(5, 3)
    np.testing.assert_allclose(certified_radii(X, y, Xt, yt, 7.5 * M, 3),
                               certified_radii(X, y, Xt, yt, M, 3), rtol=1e-9)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_no_perturbation_inside_the_radius_flips_the_prediction(K):
    """Soundness: random perturbations of norm 0.999 r never change the K-NN vote."""
    X, y, Xt, yt, M = _problem(11 + K, 3, d=3)
    r = certified_radii(X, y, Xt, yt, M, K)
    knn = MahalanobisKNN(M, K).fit(X, y)
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(r > 0)[:10]:
        u = rng.normal(size=(3000, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        for scale in (0.5, 0.999):
            assert np.all(knn.predict(Xt[i] + scale * r[i] * u) == yt[i])


def test_bound_is_tight_for_1nn_with_two_points():
    # one positive at 0, one negative at 1 on a line: the exact radius is 0.5 - |x|
    X = np.array([[0.0], [1.0]])
    y = np.array([0, 1])
    r = certified_radii(X, y, np.array([[0.1]]), np.array([0]), np.eye(1), 1)
    np.testing.assert_allclose(r, [0.4])


def test_duplicate_points_with_different_labels_are_handled():
    X, y, Xt, yt, M = _problem(2, 2)
    X = np.vstack([X, X[:3]])
    y = np.concatenate([y, 1 - y[:3]])
    ref = certified_radii_bruteforce(X, y, Xt, yt, M, 3)
    np.testing.assert_allclose(certified_radii(X, y, Xt, yt, M, 3), ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_neighbors": 4}, "must be odd"),
        ({"n_neighbors": 61}, "larger than class"),
        ({"method": "fast"}, "method must be one of"),
        ({"M": -np.eye(5)}, "not positive semi-definite"),
        ({"M": np.eye(4)}, "data have 5 features"),
    ],
)
def test_bad_input(kwargs, match):
    X, y, Xt, yt, M = _problem(0, 2)
    args = dict(X_train=X, y_train=y, X_test=Xt, y_test=yt, M=M, n_neighbors=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        certified_radii(**args)


def test_nan_and_single_class():
    X, y, Xt, yt, M = _problem(0, 2)
    Xn = Xt.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        certified_radii(X, y, Xn, yt, M, 1)
    with pytest.raises(ValueError, match="single class"):
        certified_radii(X, np.zeros_like(y), Xt, yt, M, 1)


def test_progress_reaches_the_total():
    X, y, Xt, yt, M = _problem(0, 3)
    calls = []
    certified_radii(X, y, Xt, yt, M, 3, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(Xt), len(Xt))
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
