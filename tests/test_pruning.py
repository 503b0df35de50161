"""Adversarial pruning: what it keeps is separated, what it removes is minimal (checked by
enumeration), and the K-NN, the certifier, the exact solver and the attacks run on it."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arml_core
from arml_core import MahalanobisKNN, adversarial_pruning, attack, certified_radii, minimal_perturbations
from arml_core import pruning as pruning_mod
from arml_core.pruning import separation


def pair_separation(a, b, M=None):
    """s_M(a, b) = u^T M u / ||M u|| written out on its own (0 when M u = 0)."""
    u = np.asarray(a, float) - np.asarray(b, float)
    Mu = u if M is None else np.asarray(M, float) @ u
    den = float(np.sqrt(Mu @ Mu))
    return 0.0 if den == 0 else float(u @ Mu) / den


def conflicts(X, y, M, r):
    return [(i, j) for i in range(len(X)) for j in range(i + 1, len(X))
            if y[i] != y[j] and pair_separation(X[i], X[j], M) < 2 * r]


def minimum_removal(X, y, M, r):
    """The smallest number of points whose removal leaves no conflict, by enumerating
    the subsets in order of size; and every removal set of that size."""
    edges = conflicts(X, y, M, r)
    for k in range(len(X) + 1):
        best = [set(s) for s in itertools.combinations(range(len(X)), k)
                if all(i in s or j in s for i, j in edges)]
        if best:
            return k, best
    raise AssertionError("unreachable: removing everything covers every conflict")


def assert_separated(X, y, M, r, kept):
    S = separation(X[kept], M)
    other = y[kept][:, None] != y[kept][None, :]
    assert np.all(S[other] >= 2 * r * (1 - 1e-9)), S[other].min()


def random_metric(rng, D, rank=None):
    A = rng.normal(size=(rank or D, D))
    return A.T @ A


# ------------------------------------------------------------------ hand-built cases


def test_two_classes_on_a_line_remove_exactly_the_minimal_set():
    # class 0 at 0, 1, 2 and class 1 at 0.5, 1.5; 2r = 0.6 joins each neighbour pair: a path
    # 0 - 0.5 - 1 - 1.5 - 2 whose only cover of size 2 is {0.5, 1.5}
    X = np.array([[0.0], [1.0], [2.0], [0.5], [1.5]])
    y = np.array([0, 0, 0, 1, 1])
    size, best = minimum_removal(X, y, None, 0.3)
    assert size == 2 and best == [{3, 4}]
    res = adversarial_pruning(X, y, None, 0.3, return_result=True)
    assert res.removed.tolist() == [3, 4] and res.kept.tolist() == [0, 1, 2]
    assert res.exact and res.solver == "matching" and res.lower_bound == 2 and res.n_conflicts == 4
    assert adversarial_pruning(X, y, None, 0.3).tolist() == [0, 1, 2]
    # 2r = 0.4 < 0.5: nothing conflicts; at exactly r = 0.25 (distance 2r) nothing either
    assert adversarial_pruning(X, y, None, 0.2).tolist() == [0, 1, 2, 3, 4]
    assert adversarial_pruning(X, y, None, 0.25).tolist() == [0, 1, 2, 3, 4]
    assert adversarial_pruning(X, y, None, 0.0).tolist() == [0, 1, 2, 3, 4]


def test_three_classes_a_triangle_goes_to_the_exact_solver():
    # A(0), B(1), C(2) mutually within 2r = 0.8 (an odd cycle: not bipartite), D(0) close to B only
    X = np.array([[0.0, 0.0], [0.5, 0.0], [0.25, 0.4], [1.2, 0.0], [3.0, 3.0], [3.3, 3.0]])
    y = np.array([0, 1, 2, 0, 1, 1])
    size, best = minimum_removal(X, y, None, 0.4)
    assert size == 2 and {0, 1} in best and {1, 2} in best
    res = adversarial_pruning(X, y, None, 0.4, return_result=True)
    assert len(res.removed) == 2 and set(res.removed) in best
    assert res.exact and res.solver == "milp" and res.components == {"milp": 1}
    assert_separated(X, y, None, 0.4, res.kept)
    # the published 2-approximation: here optimal too, but it cannot prove it (its matching has one edge)
    g = adversarial_pruning(X, y, None, 0.4, method="greedy", return_result=True)
    assert set(g.removed) in best and g.lower_bound == 1 and not g.exact and g.solver == "greedy"
    # a component too large for the exact solver (exact_limit) gets the greedy
    assert adversarial_pruning(X, y, None, 0.4, exact_limit=2, return_result=True).solver == "greedy"


def test_three_classes_on_a_chain_are_bipartite_and_solved_by_matching():
    # 0 - 1 - 2 - 0 along a line: a path, 2-colourable although it has three labels
    X = np.array([[0.0], [0.5], [1.0], [1.5], [5.0], [5.4]])
    y = np.array([0, 1, 2, 0, 2, 1])
    size, best = minimum_removal(X, y, None, 0.3)
    res = adversarial_pruning(X, y, None, 0.3, return_result=True)
    assert size == 3 and set(res.removed) in best
    assert res.exact and res.solver == "matching" and res.components == {"matching": 2}


def test_the_separation_under_a_metric_is_twice_the_distance_to_the_bisector():
    # M ignores the second feature: far apart in l2, but a step of 0.05 along the first
    # feature reaches the bisector, so 2r = 0.2 > s_M = 0.1 is a conflict
    M = np.diag([1.0, 0.0])
    X = np.array([[0.0, 0.0], [0.1, 5.0]])
    y = np.array([0, 1])
    assert separation(X, M)[0, 1] == pytest.approx(0.1)
    assert separation(X)[0, 1] == pytest.approx(np.hypot(0.1, 5.0))
    assert len(adversarial_pruning(X, y, M, 0.1)) == 1 and len(adversarial_pruning(X, y, None, 0.1)) == 2
    assert len(adversarial_pruning(X, y, M, 0.049)) == 2
    # a difference in the null space of M: the classifier cannot tell them apart, any r > 0 conflicts
    X0 = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert separation(X0, M)[0, 1] == 0.0
    assert len(adversarial_pruning(X0, y, M, 1e-9)) == 1 and len(adversarial_pruning(X0, y, M, 0.0)) == 2
    # scale-free: a metric and its multiple prune alike
    rng = np.random.default_rng(3)
    Xr, yr, Mr = rng.random((40, 3)), rng.integers(0, 3, 40), random_metric(rng, 3)
    np.testing.assert_array_equal(adversarial_pruning(Xr, yr, Mr, 0.1), adversarial_pruning(Xr, yr, 250.0 * Mr, 0.1))


@pytest.mark.parametrize("seed", range(6))
def test_for_two_points_the_exact_radius_is_half_the_separation(seed):
    """No pairwise rule weaker than s_M >= 2r certifies r: with two training points the
    exact 1-NN radius at one of them is s_M / 2."""
    rng = np.random.default_rng(seed)
    D = int(rng.integers(1, 5))
    M = random_metric(rng, D, rank=int(rng.integers(1, D + 1))) if seed % 3 else None
    X = rng.random((2, D))
    if pair_separation(X[0], X[1], M) < 1e-6:
        X[1] += 1.0  # keep the pair distinguishable by M
    norms, _ = minimal_perturbations(X, [0, 1], X[:1], [0], M, device="cpu")
    assert norms[0] == pytest.approx(pair_separation(X[0], X[1], M) / 2, rel=1e-6)


# ------------------------------------------------------------------ properties


@st.composite
def problems(draw, max_n=11, classes=(2, 2)):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(2, max_n))
    D = draw(st.integers(1, 3))
    C = draw(st.integers(*classes))
    rng = np.random.default_rng(seed)
    X = np.round(rng.random((n, D)), 2)  # a coarse grid: duplicates and near-ties happen
    y = rng.integers(0, C, n)
    y[:2] = [0, 1]  # at least two classes
    M = None if draw(st.booleans()) else random_metric(rng, D, rank=int(rng.integers(1, D + 1)))
    r = draw(st.floats(0.0, 0.6)) + 3.3e-7  # off the grid's distances: no exact ties at 2r
    return X, y, M, r


def check_against_enumeration(problem):
    """The default method's removal is exact, of the enumerated minimal size, one of the
    minimal sets, and leaves the kept points separated."""
    X, y, M, r = problem
    size, best = minimum_removal(X, y, M, r)
    res = adversarial_pruning(X, y, M, r, return_result=True)
    assert res.exact and len(res.removed) == size == res.lower_bound
    assert set(res.removed.tolist()) in best
    assert_separated(X, y, M, r, res.kept)
    return res, size


@settings(max_examples=60, deadline=None)
@given(problems(classes=(2, 2)))
def test_two_classes_match_the_enumerated_minimum(problem):
    res, _ = check_against_enumeration(problem)
    assert res.solver in ("matching", "none")


@settings(max_examples=60, deadline=None)
@given(problems(classes=(3, 4)))
def test_more_classes_exact_and_greedy_against_the_enumerated_minimum(problem):
    res, size = check_against_enumeration(problem)
    X, y, M, r = problem
    g = adversarial_pruning(X, y, M, r, method="greedy", return_result=True)
    assert g.lower_bound <= size <= len(g.removed) <= 2 * size
    assert g.exact == (len(g.removed) == g.lower_bound)
    for out in (res, g):
        assert_separated(X, y, M, r, out.kept)
        assert np.array_equal(np.sort(np.concatenate([out.kept, out.removed])), np.arange(len(X)))
        assert out.kept.dtype.kind == "i" and np.all(np.diff(out.kept) > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), block=st.sampled_from([7, 64, 500]))
def test_the_blocked_conflict_graph_equals_the_direct_one(seed, n, block):
    rng = np.random.default_rng(seed)
    D = int(rng.integers(1, 6))
    X, y = rng.random((n, D)), rng.integers(0, 3, n)
    M = random_metric(rng, D, rank=int(rng.integers(1, D + 1)))
    r = float(rng.uniform(0.01, 0.3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pruning_mod, "_BLOCK_ELEMENTS", block)
        got = pruning_mod.conflict_graph(X, y, M, r, device="cpu")
    S = separation(X, M)
    i, j = np.nonzero(np.triu((S < 2 * r) & (y[:, None] != y[None, :]), k=1))
    np.testing.assert_array_equal(got, np.stack([i, j], 1))


@pytest.mark.parametrize("metric", ["euclidean", "random"])
def test_every_kept_point_is_robust_at_r_for_1nn(metric):
    """After pruning at r, every kept point, as a test point against the kept set, is
    correctly classified by 1-NN with an exact radius and a K = 1 certificate >= r."""
    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(c, 0.25, size=(30, 3)) for c in ([0, 0, 0], [0.6, 0, 0], [0.3, 0.5, 0])])
    y = np.repeat([0, 1, 2], 30)
    M = None if metric == "euclidean" else random_metric(rng, 3)
    r = 0.15
    kept = adversarial_pruning(X, y, M, r)
    assert 30 < len(kept) < 90  # something conflicted, much is kept
    Xk, yk = X[kept], y[kept]
    assert np.all(MahalanobisKNN(M, 1).fit(Xk, yk).predict(Xk) == yk)
    exact, _ = minimal_perturbations(Xk, yk, Xk, yk, M, device="cpu")
    cert = certified_radii(Xk, yk, Xk, yk, M, 1, device="cpu")
    assert exact.min() >= r * (1 - 1e-6) and cert.min() >= r * (1 - 1e-6)
    assert np.all(cert <= exact * (1 + 1e-6) + 1e-12)
    # without pruning the same property fails somewhere (the test is not vacuous)
    exact_all, _ = minimal_perturbations(X, y, X, y, M, device="cpu")
    assert exact_all.min() < r


def test_knn_certifier_exact_solver_and_attack_run_unchanged_on_the_pruned_set():
    rng = np.random.default_rng(5)
    X = rng.random((240, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=240) > 0.5).astype(int) + (X[:, 1] > 0.7)
    Xt, yt = rng.random((25, 4)), rng.integers(0, 3, 25)
    M = random_metric(rng, 4)
    kept = adversarial_pruning(X, y, M, 0.05)
    assert 0 < len(kept) < len(X)
    Xk, yk = X[kept], y[kept]
    pred = MahalanobisKNN(M, 11).fit(Xk, yk).predict(Xt)
    cert = certified_radii(Xk, yk, Xt, yt, M, 11, device="cpu")
    exact, deltas = minimal_perturbations(Xk, yk, Xt, yt, M, device="cpu")
    res = attack(Xk, yk, Xt, yt, M, 11, method="region", device="cpu")
    norms = np.asarray(res.norms)
    assert cert.shape == exact.shape == norms.shape == (25,)
    assert np.all((cert == 0) >= (pred != yt))  # misclassified points certify 0
    assert np.all(cert <= norms * (1 + 1e-6) + 1e-12)  # sound: certified <= attack
    assert np.all((norms == 0) == (pred != yt))


def test_pendigits_pruned_at_a_grid_radius_is_separated(shared_data_dir):
    from arml_core.data import load_dataset

    ds = load_dataset("pendigits", data_dir=shared_data_dir, n_test=10)
    res = adversarial_pruning(ds.X_train, ds.y_train, None, 0.2, device="cpu", return_result=True)
    assert res.exact and 0.9 * len(ds.y_train) < len(res.kept) < len(ds.y_train)
    Xk, yk = ds.X_train[res.kept], ds.y_train[res.kept]
    for s in range(0, len(Xk), 1000):  # direct l2 distances, blockwise
        d = np.sqrt(((Xk[s:s + 1000, None, :] - Xk[None, :, :]) ** 2).sum(-1))
        assert d[yk[s:s + 1000, None] != yk[None, :]].min() >= 0.4 * (1 - 1e-9)
    # and a sample of the kept points is robust at r for 1-NN on the kept set
    sample = np.random.default_rng(0).choice(len(Xk), 60, replace=False)
    exact, _ = minimal_perturbations(Xk, yk, Xk[sample], yk[sample], None, device="cpu")
    assert exact.min() >= 0.2 * (1 - 1e-6)


# ------------------------------------------------------------------ solver fall-backs and bad input


def test_a_milp_that_does_not_finish_falls_back_to_the_greedy(monkeypatch):
    from types import SimpleNamespace

    X = np.array([[0.0, 0.0], [0.5, 0.0], [0.25, 0.4], [1.2, 0.0]])
    y = np.array([0, 1, 2, 0])
    monkeypatch.setattr(pruning_mod, "milp", lambda *a, **k: SimpleNamespace(
        status=1, x=None, mip_dual_bound=float("nan"), message="time limit reached"))
    res = adversarial_pruning(X, y, None, 0.4, return_result=True)
    assert res.solver == "milp+greedy" and not res.exact and len(res.removed) == 2
    assert_separated(X, y, None, 0.4, res.kept)
    with pytest.raises(RuntimeError, match="did not prove optimality"):
        adversarial_pruning(X, y, None, 0.4, method="exact")


@pytest.mark.parametrize("kwargs, match", [
    ({"r": -0.1}, "r must be a non-negative finite number"),
    ({"r": float("nan")}, "r must be"),
    ({"r": float("inf")}, "r must be"),
    ({"r": True}, "r must be"),
    ({"X": np.array([[0.0, np.nan], [1.0, 1.0]])}, "NaN or infinite"),
    ({"X": np.zeros(2)}, "2-D"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "non-empty"),
    ({"y": np.array([0, 1, 1])}, "one label per row"),
    ({"y": np.array([1, 1])}, "single class"),
    ({"y": np.array([0.0, np.nan])}, "NaN labels"),
    ({"M": np.eye(3)}, "3x3 but the data have 2 features"),
    ({"M": np.array([[1.0, 0.0], [0.0, -1.0]])}, "positive semi-definite"),
    ({"method": "fast"}, "unknown method"),
    ({"exact_limit": -1}, "exact_limit"),
    ({"time_limit": 0}, "time_limit"),
])
def test_bad_input_is_a_clear_value_error(kwargs, match):
    args = {"X": np.array([[0.0, 0.0], [1.0, 1.0]]), "y": np.array([0, 1]), "M": None, "r": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        adversarial_pruning(args.pop("X"), args.pop("y"), args.pop("M"), args.pop("r"), **args)


def test_exported_from_the_package():
    assert arml_core.adversarial_pruning is adversarial_pruning
    assert "adversarial_pruning" in arml_core.__all__
