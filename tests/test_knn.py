from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from arml_core.knn import MahalanobisKNN, check_n_neighbors
from arml_core.metric import components_from_metric


@pytest.mark.parametrize("K", [1, 3, 7])
@pytest.mark.parametrize("rank", [5, 2])
def test_agrees_with_sklearn_on_transformed_data(K, rank):
    rng = np.random.default_rng(K + rank)
    X, Xt = rng.random((200, 5)), rng.random((100, 5))
    y = rng.integers(0, 3, 200)
    G = rng.normal(size=(rank, 5))
    M = G.T @ G
    ours = MahalanobisKNN(M, n_neighbors=K).fit(X, y).predict(Xt)
    ref = KNeighborsClassifier(n_neighbors=K).fit(X @ G.T, y).predict(Xt @ G.T)
    assert np.mean(ours == ref) == 1.0


def test_batches_do_not_change_the_answer(monkeypatch):
    rng = np.random.default_rng(0)
    X, Xt, y = rng.random((50, 3)), rng.random((40, 3)), rng.integers(0, 2, 50)
    full = MahalanobisKNN(None, 3).fit(X, y).predict(Xt)
    monkeypatch.setattr("arml_core.knn._BATCH_ELEMENTS", 60)
    np.testing.assert_array_equal(MahalanobisKNN(None, 3).fit(X, y).predict(Xt), full)


def test_labels_are_returned_in_the_original_values():
    X = np.array([[0.0], [0.1], [1.0], [1.1]])
    y = np.array(["cat", "cat", "dog", "dog"])
    assert list(MahalanobisKNN().fit(X, y).predict([[0.05], [0.9]])) == ["cat", "dog"]


def test_components_reproduce_the_metric():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 6))
    M = A.T @ A
    G = components_from_metric(M)
    np.testing.assert_allclose(G.T @ G, M, atol=1e-10)
    assert G.shape == (3, 6)


@pytest.mark.parametrize("K, match", [(2, "must be odd"), (0, "must be odd"), (1.5, "odd positive integer"),
                                      (9, "larger than class")])
def test_bad_k(K, match):
    y = np.array([0] * 5 + [1] * 20)
    with pytest.raises(ValueError, match=match):
        check_n_neighbors(K, y)


def test_bad_inputs():
    X, y = np.random.default_rng(0).random((10, 2)), np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="single class"):
        MahalanobisKNN().fit(X, np.zeros(10))
    knn = MahalanobisKNN().fit(X, y)
    with pytest.raises(ValueError, match="3 features"):
        knn.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        knn.predict(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="square"):
        MahalanobisKNN(np.ones((2, 3))).fit(X, y)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        MahalanobisKNN(device="cuda").fit(np.eye(2), [0, 1])
