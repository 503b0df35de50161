"""Tests of the exact minimal-perturbation solver for Mahalanobis 1-NN (arml_core.exact)."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from arml_core.robustness.exact import ConvergenceError, minimal_perturbations, verify_perturbations
from arml_core.knn import MahalanobisKNN
from arml_core.metric import metric_from_components


def make_problem(seed, D, n_classes, metric="full", n_train=60, n_test=16):
    rng = np.random.default_rng(seed)
    centres = rng.random((n_classes, D))

    def label(Z):  # nearest centre, with 10% label noise
        lab = ((Z[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
        flip = rng.random(len(Z)) < 0.1
        lab[flip] = rng.integers(0, n_classes, flip.sum())
        return lab

    X = rng.random((n_train, D))
    y = label(X)
    y[:n_classes] = np.arange(n_classes)
    Xt = rng.random((n_test, D))
    yt = label(Xt)
    if metric == "identity":
        M = np.eye(D)
    elif metric == "full":
        G = rng.standard_normal((D, D))
        M = metric_from_components(G) / D
    elif metric == "lowrank":
        G = rng.standard_normal((max(1, D // 2), D))
        M = metric_from_components(G)
    else:
        raise AssertionError(metric)
    return X, y, Xt, yt, M


CASES = [
    (2, 2, "identity"), (2, 3, "full"), (2, 2, "lowrank"),
    (5, 3, "full"), (5, 4, "lowrank"), (5, 2, "identity"),
    (10, 2, "full"), (10, 4, "lowrank"), (10, 3, "identity"),
]


@pytest.mark.parametrize("box", [None, (0.0, 1.0)], ids=["free", "box01"])
@pytest.mark.parametrize("D,n_classes,metric", CASES)
def test_fast_matches_cvxpy_reference(D, n_classes, metric, box):
    seed = 1000 * D + 10 * n_classes + len(metric)
    X, y, Xt, yt, M = make_problem(seed, D, n_classes, metric, n_train=40 + 4 * D, n_test=14)
    fast, d_fast = minimal_perturbations(X, y, Xt, yt, M, box=box, device="cpu")
    ref, d_ref = minimal_perturbations(X, y, Xt, yt, M, box=box, solver="cvxpy")
    assert (fast > 0).sum() >= 3, "the problem should have some correctly classified points"
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(d_fast, axis=1), fast, rtol=1e-9, atol=1e-12)
    # the minimiser of the winning QP is unique, so the deltas agree as well
    np.testing.assert_allclose(d_fast, d_ref, atol=1e-4 * max(1.0, float(fast.max())))


@pytest.mark.parametrize("box", [None, (0.0, 1.0)], ids=["free", "box01"])
@pytest.mark.parametrize("D,n_classes,metric", CASES)
def test_deltas_verify_against_the_classifier(D, n_classes, metric, box):
    X, y, Xt, yt, M = make_problem(7 + D + n_classes, D, n_classes, metric, n_train=80, n_test=20)
    norms, deltas = minimal_perturbations(X, y, Xt, yt, M, box=box)
    assert verify_perturbations(X, y, Xt, yt, M, norms, deltas, rtol=1e-4, box=box).all()

    knn = MahalanobisKNN(M, n_neighbors=1).fit(X, y)
    correct = knn.predict(Xt) == yt
    assert np.all(norms[~correct] == 0) and np.all(deltas[~correct] == 0)
    assert np.all(norms[correct] > 0) and np.all(np.isfinite(norms))
    s = np.flatnonzero(correct)
    # strictly inside the radius: still correct (this is the exactness / lower-bound side)
    assert np.all(knn.predict(Xt[s] + (1 - 1e-4) * deltas[s]) == yt[s])
    # just past the boundary along the ray: flipped for (almost) every point; the rare
    # exceptions are optima at a vertex of the adversarial cell (verify covers them)
    flipped = knn.predict(Xt[s] + (1 + 1e-4) * deltas[s]) != yt[s]
    assert flipped.mean() >= 0.75
    if box is not None:
        z = Xt + deltas
        assert np.all(z >= -1e-9) and np.all(z <= 1 + 1e-9)


def _voronoi_radius_2d(X, y, x, label):
    """Exact eps* for Euclidean 1-NN in 2-D, independently of any QP: the closest point of
    the (closed) union of other-class Voronoi cells is either the projection of x onto a
    bisector of an (other, same)-class pair, or a Voronoi vertex (a circumcentre)."""
    neg, pos = X[y != label], X[y == label]
    cands = []
    # projections onto bisectors {z : (p - n).z = (|p|^2 - |n|^2) / 2}
    n_, p_ = np.repeat(neg, len(pos), 0), np.tile(pos, (len(neg), 1))
    a = p_ - n_
    c = 0.5 * ((p_ ** 2).sum(1) - (n_ ** 2).sum(1))
    t = ((a @ x) - c) / (a ** 2).sum(1)
    cands.append(x - t[:, None] * a)
    # circumcentres of all triples
    tri = np.array(list(itertools.combinations(range(len(X)), 3)))
    A, B, C = X[tri[:, 0]], X[tri[:, 1]], X[tri[:, 2]]
    d = 2 * (A[:, 0] * (B[:, 1] - C[:, 1]) + B[:, 0] * (C[:, 1] - A[:, 1]) + C[:, 0] * (A[:, 1] - B[:, 1]))
    ok = np.abs(d) > 1e-9
    A, B, C, d = A[ok], B[ok], C[ok], d[ok]
    sa, sb, sc = (A ** 2).sum(1), (B ** 2).sum(1), (C ** 2).sum(1)
    ux = (sa * (B[:, 1] - C[:, 1]) + sb * (C[:, 1] - A[:, 1]) + sc * (A[:, 1] - B[:, 1])) / d
    uy = (sa * (C[:, 0] - B[:, 0]) + sb * (A[:, 0] - C[:, 0]) + sc * (B[:, 0] - A[:, 0])) / d
    cands.append(np.stack([ux, uy], 1))
    Z = np.concatenate(cands)
    d2 = ((Z[:, None, :] - X[None, :, :]) ** 2).sum(2)
    valid = d2[:, y != label].min(1) <= d2.min(1) + 1e-10
    return float(np.sqrt(((Z[valid] - x) ** 2).sum(1)).min())


def test_2d_euclidean_matches_voronoi_geometry_and_random_search():
    rng = np.random.default_rng(3)
    X = rng.random((30, 2))
    y = rng.integers(0, 3, 30)
    Xt = rng.random((12, 2))
    yt = rng.integers(0, 3, 12)
    norms, deltas = minimal_perturbations(X, y, Xt, yt, None)
    knn = MahalanobisKNN(None, n_neighbors=1).fit(X, y)
    correct = knn.predict(Xt) == yt
    assert correct.sum() >= 3
    dirs = rng.standard_normal((4000, 2))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for i in np.flatnonzero(correct):
        eps = norms[i]
        assert eps == pytest.approx(_voronoi_radius_2d(X, y, Xt[i], yt[i]), rel=1e-8, abs=1e-12)
        # no perturbation shorter than eps flips the label (sphere at 0.999 eps and inside)
        radii = np.concatenate([np.full(len(dirs), 0.999 * eps), eps * rng.random(len(dirs))])
        pts = Xt[i] + radii[:, None] * np.concatenate([dirs, dirs])
        assert np.all(knn.predict(pts) == yt[i])


def test_2d_dense_grid_never_beats_the_radius():
    rng = np.random.default_rng(11)
    X = rng.random((25, 2))
    y = rng.integers(0, 2, 25)
    Xt = rng.random((8, 2))
    yt = rng.integers(0, 2, 8)
    norms, _ = minimal_perturbations(X, y, Xt, yt, None)
    knn = MahalanobisKNN(None, n_neighbors=1).fit(X, y)
    g = np.linspace(-0.25, 1.25, 301)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    pred = knn.predict(grid)
    h = g[1] - g[0]
    for i in np.flatnonzero(norms > 0):
        dist = np.linalg.norm(grid[pred != yt[i]] - Xt[i], axis=1).min()
        assert norms[i] <= dist + 1e-12  # every adversarial grid point is at least eps away
        assert dist <= norms[i] + 2 * h  # and the grid finds one close to eps


def test_misclassified_and_unknown_labels_get_zero():
    X, y, _, _, M = make_problem(5, 3, 3, "full")
    Xt = X[:6].copy()
    yt = (y[:6] + 1) % 3  # copies of training points with another label: misclassified
    yt[0] = 17  # a label absent from training
    norms, deltas = minimal_perturbations(X, y, Xt, yt, M)
    assert np.all(norms == 0) and np.all(deltas == 0)
    assert verify_perturbations(X, y, Xt, yt, M, norms, deltas).all()


def test_metric_scale_invariance_and_identity_default():
    X, y, Xt, yt, M = make_problem(9, 4, 3, "full")
    n1, _ = minimal_perturbations(X, y, Xt, yt, M)
    n2, _ = minimal_perturbations(X, y, Xt, yt, 37.0 * M)
    np.testing.assert_allclose(n1, n2, rtol=1e-9)
    e1, _ = minimal_perturbations(X, y, Xt, yt, None)
    e2, _ = minimal_perturbations(X, y, Xt, yt, np.eye(4))
    np.testing.assert_allclose(e1, e2, rtol=1e-12)


def test_screening_settings_do_not_change_the_answer():
    X, y, Xt, yt, M = make_problem(21, 6, 4, "lowrank", n_train=120, n_test=20)
    base, _ = minimal_perturbations(X, y, Xt, yt, M)
    for n_screen, n_near, seed in [(0, 0, 0), (0, 1, 0), (3, 0, 5), (200, 50, 1)]:
        other, _ = minimal_perturbations(
            X, y, Xt, yt, M, n_screen=n_screen, n_screen_near=n_near, random_state=seed
        )
        np.testing.assert_allclose(other, base, rtol=1e-9, atol=1e-12)


def test_box_infeasible_gives_inf():
    # class 0 at x1=0.1, class 1 at x1=0.9: the boundary x1 = 0.5 lies outside the box
    X = np.array([[0.1, 0.2], [0.1, 0.8], [0.9, 0.2], [0.9, 0.8]])
    y = np.array([0, 0, 1, 1])
    Xt = np.array([[0.2, 0.5], [0.25, 0.3], [0.8, 0.5]])
    yt = np.array([0, 0, 1])
    box = ([0.0, 0.0], [0.3, 1.0])
    norms, deltas = minimal_perturbations(X, y, Xt, yt, None, box=box)
    assert np.isinf(norms[0]) and np.isinf(norms[1]) and np.all(np.isnan(deltas[:2]))
    # the third point lies outside the box (x1 = 0.8): moving it in (to x1 <= 0.3) flips it
    assert norms[2] == pytest.approx(0.5)
    np.testing.assert_allclose(deltas[2], [-0.5, 0.0], atol=1e-9)
    ref, _ = minimal_perturbations(X, y, Xt, yt, None, box=box, solver="cvxpy")
    assert np.isinf(ref[0]) and np.isinf(ref[1]) and ref[2] == pytest.approx(0.5, rel=1e-6)
    assert verify_perturbations(X, y, Xt, yt, None, norms, deltas, box=box).all()
    # without the box the radius is the distance to x1 = 0.5
    free, _ = minimal_perturbations(X, y, Xt, yt, None)
    np.testing.assert_allclose(free, [0.3, 0.25, 0.3])


def test_points_outside_the_box_are_moved_into_it():
    rng = np.random.default_rng(4)
    X = rng.random((50, 3))
    y = rng.integers(0, 2, 50)
    Xt = rng.random((15, 3)) * 1.3 - 0.15
    yt = rng.integers(0, 2, 15)
    box = (0.0, 1.0)
    fast, d = minimal_perturbations(X, y, Xt, yt, None, box=box)
    ref, _ = minimal_perturbations(X, y, Xt, yt, None, box=box, solver="cvxpy")
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-9)
    assert verify_perturbations(X, y, Xt, yt, None, fast, d, box=box).all()


def test_progress_callback_reaches_total():
    X, y, Xt, yt, M = make_problem(2, 3, 2, "full")
    calls = []
    minimal_perturbations(X, y, Xt, yt, M, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (len(Xt), len(Xt))
    assert all(b == len(Xt) for _, b in calls) and [a for a, _ in calls] == sorted(a for a, _ in calls)


def _hard_problem():
    """Same-class points on a sphere around x: the optimum has many active rows, so the
    working set needs several iterations."""
    rng = np.random.default_rng(0)
    D = 6
    x = np.full(D, 0.5)
    U = rng.standard_normal((60, D))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    X = np.vstack([x + 0.2 * U, x + 0.45 * np.eye(D)[:3]])
    y = np.r_[np.zeros(60, int), np.ones(3, int)]
    Xt = np.vstack([x, x + 0.01])
    return X, y, Xt, np.zeros(2, int)


def test_convergence_error_when_max_iter_is_too_small():
    X, y, Xt, yt = _hard_problem()
    exact, _ = minimal_perturbations(X, y, Xt, yt, None)
    ref, _ = minimal_perturbations(X, y, Xt, yt, None, solver="cvxpy")
    np.testing.assert_allclose(exact, ref, rtol=1e-6)
    with pytest.raises(ConvergenceError, match=r"test point \d+.*max_iter=1"):
        minimal_perturbations(X, y, Xt, yt, None, max_iter=1)
    assert issubclass(ConvergenceError, RuntimeError)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        norms, deltas = minimal_perturbations(X, y, Xt, yt, None, max_iter=1, strict=False)
    bad = np.isnan(norms)
    assert bad.any() and np.all(np.isnan(deltas[bad]))
    np.testing.assert_allclose(norms[~bad], exact[~bad])  # the others are still exact
    assert not verify_perturbations(X, y, Xt, yt, None, norms, deltas)[bad].any()


def test_strict_false_without_failures_does_not_warn():
    X, y, Xt, yt, M = make_problem(8, 3, 2, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minimal_perturbations(X, y, Xt, yt, M, strict=False)


def test_verify_rejects_wrong_answers():
    X, y, Xt, yt, M = make_problem(12, 4, 3, "full", n_test=20)
    norms, deltas = minimal_perturbations(X, y, Xt, yt, M)
    s = np.flatnonzero(norms > 0)
    assert verify_perturbations(X, y, Xt, yt, M, norms, deltas).all()
    too_long = verify_perturbations(X, y, Xt, yt, M, norms * 1.01, deltas * 1.01)
    assert not too_long[s].any()  # (1 - rtol) * delta already flips
    too_short = verify_perturbations(X, y, Xt, yt, M, norms * 0.99, deltas * 0.99)
    assert not too_short[s].any()  # (1 + rtol) * delta does not flip yet
    wrong_zero = norms.copy()
    wrong_zero[s[0]] = 0.0
    assert not verify_perturbations(X, y, Xt, yt, M, wrong_zero, deltas)[s[0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solver="even"), "unknown solver"),
        (dict(solver="qp"), "unknown solver"),
        (dict(box=(1.0, 0.0)), "lo <= hi"),
        (dict(box=(0.0,)), "pair"),
        (dict(box=(np.zeros(2), np.ones(2))), "length 3"),
        (dict(box=(np.nan, 1.0)), "NaN"),
        (dict(tol=0.0), "tol"),
        (dict(max_iter=0), "max_iter"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_options_raise(kwargs, match):
    X, y, Xt, yt, M = make_problem(0, 3, 2, "full")
    with pytest.raises(ValueError, match=match):
        minimal_perturbations(X, y, Xt, yt, M, **kwargs)


@pytest.mark.parametrize("solver", ["fast", "cvxpy"])
def test_bad_inputs_raise(solver):
    X, y, Xt, yt, M = make_problem(0, 3, 2, "full", n_test=4)
    bad = Xt.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        minimal_perturbations(X, y, bad, yt, M, solver=solver)
    badX = X.copy()
    badX[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        minimal_perturbations(badX, y, Xt, yt, M, solver=solver)
    with pytest.raises(ValueError, match="features"):
        minimal_perturbations(X, y, Xt[:, :2], yt, M, solver=solver)
    with pytest.raises(ValueError, match="shape mismatch"):
        minimal_perturbations(X, y[:-1], Xt, yt, M, solver=solver)
    with pytest.raises(ValueError, match="shape mismatch"):
        minimal_perturbations(X, y, Xt, yt[:-1], M, solver=solver)
    with pytest.raises(ValueError, match="single class"):
        minimal_perturbations(X, np.zeros_like(y), Xt, yt, M, solver=solver)
    with pytest.raises(ValueError, match="positive semi-definite"):
        minimal_perturbations(X, y, Xt, yt, np.diag([1.0, -1.0, 1.0]), solver=solver)
    with pytest.raises(ValueError, match="features"):
        minimal_perturbations(X, y, Xt, yt, np.eye(4), solver=solver)
    with pytest.raises(ValueError, match="2-D"):
        minimal_perturbations(X, y, Xt[0], yt[:1], M, solver=solver)


def test_zero_metric_is_rejected():
    X, y, Xt, yt, _ = make_problem(0, 3, 2, "full")
    with pytest.raises(ValueError, match="zero matrix"):
        minimal_perturbations(X, y, Xt, yt, np.zeros((3, 3)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")
def test_cuda_without_cuda_is_an_error():
    X, y, Xt, yt, M = make_problem(0, 3, 2, "full")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        minimal_perturbations(X, y, Xt, yt, M, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, y, Xt, yt, M = make_problem(3, 5, 3, "full", n_test=20)
    cpu, _ = minimal_perturbations(X, y, Xt, yt, M, device="cpu")
    gpu, _ = minimal_perturbations(X, y, Xt, yt, M, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-12)


def test_empty_test_set():
    X, y, _, _, M = make_problem(0, 3, 2, "full")
    norms, deltas = minimal_perturbations(X, y, np.zeros((0, 3)), np.zeros(0, int), M)
    assert norms.shape == (0,) and deltas.shape == (0, 3)


def test_a_tie_between_classes_is_radius_zero_and_verifies():
    """x equidistant from a same-class and an other-class point lies on the boundary:
    radius 0 whichever way the classifier breaks the tie; the same point moved slightly
    towards its own class has a positive radius."""
    rng = np.random.default_rng(3)
    X_train = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0], [2.0, 5.0]]) + rng.normal(0, 1e-3, (4, 2)) * [0, 1]
    y_train = np.array([0, 1, 0, 1])
    x_tie = np.array([[1.0, X_train[:2, 1].mean()]])
    X_test = np.vstack([x_tie, x_tie - [0.1, 0.0]])
    for y in ([0, 0], [1, 1]):
        y_test = np.array(y)
        norms, deltas = minimal_perturbations(X_train, y_train, X_test, y_test, None)
        assert norms[0] == 0.0
        assert verify_perturbations(X_train, y_train, X_test, y_test, None, norms, deltas).all()
    # moved towards class 0: positive radius for label 0
    norms, _ = minimal_perturbations(X_train, y_train, X_test[1:], np.array([0]), None)
    assert norms[0] == pytest.approx(0.1, rel=1e-3)


def test_near_ties_on_splice_verify(shared_data_dir):
    """Regression: on splice (categorical features) two test points have their nearest
    same- and other-class distances equal to 1 ulp; the classifier's tie rule and the
    solver's disagreed (norm 2.6e-16 for a point the classifier misclassifies). Every
    perturbation of the first 1000 shuffled test points must verify."""
    from arml_core.data import load_dataset

    ds = load_dataset("splice", data_dir=shared_data_dir, n_test=1000, seed=42)
    norms, deltas = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None)
    ok = verify_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None, norms, deltas)
    assert ok.all(), np.flatnonzero(~ok)
    assert np.all((norms == 0) | (norms > 1e-8))  # no round-off-sized radii
    # the tie rule does not depend on the metric's scale (M = c I is the same classifier)
    small, _ = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, 1e-11 * np.eye(ds.n_features))
    np.testing.assert_array_equal(small == 0, norms == 0)
    np.testing.assert_allclose(small, norms, rtol=1e-6)
