"""Rescaling the metric ``M -> c M`` (c > 0) changes no radius (ARML_NOTES sections 3-5, 7).

The K-NN, Theorem 1's bound (a ratio of a difference of squared distances to a norm of
``M (p - n)``, both linear in ``c``), the exact radii and the region attack's norms (all
measured in input-space l2) are invariant to the scale of ``M``. Every floor in the
certifier, the exact solvers and the attacks is therefore relative; these tests hold them to
it over ``c = 10^k``, ``k = -16, -12, ..., 16``, against the answer at ``c = 1`` (rtol 1e-6),
on iris and on random dense and low-rank metrics. Beyond float64's reach (``check_metric``'s
range rule, e.g. ``c = 1e+-300``) the answer is a ValueError that says to rescale, never an
IndexError, a ZeroDivisionError or NaN. Complex metrics and data are rejected everywhere.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arml_core import load_dataset
from arml_core.knn import MahalanobisKNN
from arml_core.metric import (
    check_components,
    check_metric,
    components_from_metric,
    metric_from_components,
    robust_error_curve,
)
from arml_core.robustness.attacks import attack
from arml_core.robustness.certify import certified_radii, certified_radii_bruteforce
from arml_core.robustness.exact import minimal_perturbations, verify_perturbations
from arml_core.robustness.exact_knn import verify_knn_perturbations

SCALES = [10.0**k for k in range(-16, 17, 4)]
RTOL = 1e-6
N_TEST = 15  # test points attacked per call (iris' first 15 after the seeded shuffle)
N_TEST_KNN = 8  # of them for the exact K-NN search


@functools.lru_cache(maxsize=None)
def iris():
    d = load_dataset("iris")
    X_test = np.clip(d.X_test[:N_TEST], 0.0, 1.0)  # inside the box [0, 1] for the box runs
    return d.X_train, d.y_train, X_test, d.y_test[:N_TEST]


def make_metric(name: str) -> np.ndarray:
    D = iris()[0].shape[1]
    if name == "identity":
        return np.eye(D)
    rng = np.random.default_rng({"dense0": 0, "dense1": 1, "lowrank": 2}[name])
    G = rng.standard_normal((2 if name == "lowrank" else D, D))
    return metric_from_components(G) / D


METRICS = ["identity", "dense0", "dense1", "lowrank"]


@functools.lru_cache(maxsize=None)
def answers(metric: str, c: float, what: str) -> np.ndarray:
    """One method's radii on iris for ``c * M`` (cached: c = 1 is every test's reference)."""
    X, y, Xt, yt = iris()
    M = c * make_metric(metric)
    if what.startswith("cert"):  # 'cert<K>-<method>'
        K, method = what[4:].split("-")
        return certified_radii(X, y, Xt, yt, M, int(K), method=method, device="cpu")
    if what == "exact1":
        return minimal_perturbations(X, y, Xt, yt, M, device="cpu")[0]
    if what == "exact1-box":
        return minimal_perturbations(X, y, Xt, yt, M, box=(0.0, 1.0), device="cpu")[0]
    if what == "exact3":  # the order-3 cell search costs most: fewer points
        return minimal_perturbations(X, y, Xt[:N_TEST_KNN], yt[:N_TEST_KNN], M, n_neighbors=3, device="cpu").norms
    if what.startswith("region"):  # 'region<K>'
        return attack(X, y, Xt, yt, M, int(what[6:]), method="region", device="cpu").norms
    raise AssertionError(what)


def assert_same(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got == 0, ref == 0)  # the same points misclassified / on a tie
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=RTOL, atol=0)


# --------------------------------------------------------------------------- the sweep
@pytest.mark.parametrize("c", SCALES, ids=lambda c: f"c={c:.0e}")
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("K", [1, 3, 5])
def test_certified_radii_invariant(metric, c, K):
    ref = answers(metric, 1.0, f"cert{K}-pruned")
    assert (ref > 0).sum() >= N_TEST // 2  # a reference with something to lose
    assert_same(answers(metric, c, f"cert{K}-pruned"), ref)


@pytest.mark.parametrize("c", [1e-16, 1e-12, 1e12, 1e16], ids=lambda c: f"c={c:.0e}")
@pytest.mark.parametrize("method", ["cached", "naive"])
def test_certified_radii_methods_invariant(method, c):
    """The other two evaluations and the brute-force transcription at extreme scales."""
    ref = answers("dense0", 1.0, "cert3-pruned")
    assert_same(answers("dense0", c, f"cert3-{method}"), ref)
    X, y, Xt, yt = iris()
    assert_same(certified_radii_bruteforce(X, y, Xt[:6], yt[:6], c * make_metric("dense0"), 3), ref[:6])


@pytest.mark.parametrize("c", SCALES, ids=lambda c: f"c={c:.0e}")
@pytest.mark.parametrize("metric", ["identity", "dense0", "lowrank"])
def test_exact_1nn_invariant(metric, c):
    ref = answers(metric, 1.0, "exact1")
    assert (ref > 0).sum() >= N_TEST // 2
    assert_same(answers(metric, c, "exact1"), ref)


@pytest.mark.parametrize("c", [1e-16, 1e-8, 1e8, 1e16], ids=lambda c: f"c={c:.0e}")
def test_exact_1nn_box_invariant_and_verified(c):
    """With a box (the QP in input coordinates, rows M (p - n)); the answers at the scale are
    checked against the classifier itself, which needs no reference."""
    X, y, Xt, yt = iris()
    M = c * make_metric("dense1")
    norms, deltas = minimal_perturbations(X, y, Xt, yt, M, box=(0.0, 1.0), device="cpu")
    assert_same(norms, answers("dense1", 1.0, "exact1-box"))
    assert verify_perturbations(X, y, Xt, yt, M, norms, deltas, box=(0.0, 1.0), device="cpu").all()


@pytest.mark.parametrize(("metric", "c"), [("dense0", c) for c in SCALES] + [("identity", 1e-16), ("identity", 1e16)],
                         ids=lambda v: f"c={v:.0e}" if isinstance(v, float) else v)
def test_exact_knn_invariant(metric, c):
    ref = answers(metric, 1.0, "exact3")
    assert (ref > 0).sum() >= N_TEST_KNN // 2
    assert_same(answers(metric, c, "exact3"), ref)


@pytest.mark.parametrize("c", [1e-16, 1e16], ids=lambda c: f"c={c:.0e}")
def test_exact_knn_verified_at_extreme_scale(c):
    X, y, Xt, yt = iris()
    M = c * make_metric("dense0")
    Xt, yt = Xt[:N_TEST_KNN], yt[:N_TEST_KNN]
    res = minimal_perturbations(X, y, Xt, yt, M, n_neighbors=3, device="cpu")
    assert res.proven.all()
    assert verify_knn_perturbations(X, y, Xt, yt, M, res.norms, res.deltas, 3, device="cpu").all()


@pytest.mark.parametrize("c", SCALES, ids=lambda c: f"c={c:.0e}")
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("metric", ["identity", "dense0"])
def test_region_attack_invariant(metric, K, c):
    ref = answers(metric, 1.0, f"region{K}")
    assert np.isfinite(ref).all() and (ref > 0).sum() >= N_TEST // 2
    assert_same(answers(metric, c, f"region{K}"), ref)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), exponent=st.integers(-16, 15), mantissa=st.floats(1.0, 10.0),
       rank=st.integers(1, 4), K=st.sampled_from([1, 3, 5]))
def test_certified_radii_invariant_random_metrics(seed, exponent, mantissa, rank, K):
    """Random dense metrics of every rank, random real scales (not only powers of 10)."""
    X, y, Xt, yt = iris()
    G = np.random.default_rng(seed).standard_normal((rank, X.shape[1]))
    M = metric_from_components(G)
    ref = certified_radii(X, y, Xt, yt, M, K, device="cpu")
    assert_same(certified_radii(X, y, Xt, yt, mantissa * 10.0**exponent * M, K, device="cpu"), ref)


def test_issue_example_tiny_identity_metric():
    """Components 1e-7 I (M = 1e-14 I) on the full iris test set: the certified robust error
    at r = 0 is the clean error of the Euclidean 1-NN, not 100 % (issue 13)."""
    d = load_dataset("iris")
    G = 1e-7 * np.eye(d.X_train.shape[1])
    grid = [0.0, 0.05, 0.1]
    curves = {}
    for name, M in (("euclidean", np.eye(4)), ("tiny", metric_from_components(G))):
        r = certified_radii(d.X_train, d.y_train, d.X_test, d.y_test, M, 1, device="cpu")
        curves[name] = robust_error_curve(r, grid)
    clean = np.mean(MahalanobisKNN(None, 1, device="cpu").fit(d.X_train, d.y_train).predict(d.X_test) != d.y_test)
    assert curves["tiny"][0] == pytest.approx(clean)
    np.testing.assert_array_equal(curves["tiny"], curves["euclidean"])


# --------------------------------------------------------------------------- beyond float64
OUT_OF_RANGE = [1e-300, 1e-120, 1e120, 1e300]


def _entry_points(M):
    X, y, Xt, yt = iris()
    return {
        "check_metric": lambda: check_metric(M),
        "knn": lambda: MahalanobisKNN(M, 1, device="cpu").fit(X, y).predict(Xt),
        "certified_radii": lambda: certified_radii(X, y, Xt, yt, M, 3, device="cpu"),
        "exact K=1": lambda: minimal_perturbations(X, y, Xt, yt, M, device="cpu"),
        "exact K=3": lambda: minimal_perturbations(X, y, Xt, yt, M, n_neighbors=3, device="cpu"),
        "region": lambda: attack(X, y, Xt, yt, M, 3, device="cpu"),
    }


@pytest.mark.parametrize("c", OUT_OF_RANGE, ids=lambda c: f"c={c:.0e}")
@pytest.mark.parametrize("entry", list(_entry_points(np.eye(4))))
def test_unrepresentable_scale_is_a_clear_error(entry, c):
    with pytest.raises(ValueError, match="rescale"):
        _entry_points(c * np.eye(4))[entry]()


@pytest.mark.parametrize("K", [1, 3])
def test_zero_metric_exact_is_a_clear_error(K):
    """c -> 0: the zero metric (accepted by check_metric) has no exact radius."""
    X, y, Xt, yt = iris()
    with pytest.raises(ValueError, match="zero matrix"):
        minimal_perturbations(X, y, Xt, yt, np.zeros((4, 4)), n_neighbors=K, device="cpu")


@pytest.mark.parametrize("g", [1e-160, 1e160])
def test_unrepresentable_components_are_a_clear_error(g):
    with pytest.raises(ValueError, match="rescale"):
        check_components(g * np.eye(4))


@pytest.mark.parametrize("c", [1e-14, 1.0, 1e14], ids=lambda c: f"c={c:.0e}")
def test_check_metric_tolerances_are_relative(c):
    """A matrix that is not PSD, or not symmetric, is rejected at every scale (an absolute
    tolerance would wave it through once its entries are small)."""
    bad_psd = np.diag([1.0, 1.0, 1.0, -1e-4])
    asym = np.eye(4)
    asym[0, 1] = 1e-3
    for M in (bad_psd, asym):
        with pytest.raises(ValueError, match="positive semi-definite|symmetric"):
            check_metric(c * M)
    np.testing.assert_allclose(check_metric(c * make_metric("dense0")), c * make_metric("dense0"), rtol=1e-15)


# --------------------------------------------------------------------------- complex input
def _complex_cases():
    X, y, Xt, yt = iris()
    Mc = np.eye(4).astype(complex)
    Mc[0, 1], Mc[1, 0] = 1e-3j, -1e-3j
    Gc = (1 + 1j) * np.eye(4)
    M_zero_imag = np.eye(4) + 0j  # a complex dtype is rejected even when the values are real
    return {
        "metric_from_components": lambda: metric_from_components(Gc),
        "check_components": lambda: check_components(Gc),
        "check_metric": lambda: check_metric(Mc),
        "components_from_metric": lambda: components_from_metric(Mc),
        "knn": lambda: MahalanobisKNN(Mc, 1, device="cpu").fit(X, y),
        "certified_radii": lambda: certified_radii(X, y, Xt, yt, Mc, 1, device="cpu"),
        "certified_radii zero imag": lambda: certified_radii(X, y, Xt, yt, M_zero_imag, 1, device="cpu"),
        "exact K=1": lambda: minimal_perturbations(X, y, Xt, yt, Mc, device="cpu"),
        "exact K=3": lambda: minimal_perturbations(X, y, Xt, yt, Mc, n_neighbors=3, device="cpu"),
        "region": lambda: attack(X, y, Xt, yt, Mc, 1, device="cpu"),
        "X_train": lambda: certified_radii(X + 0j, y, Xt, yt, None, 1, device="cpu"),
        "X_test": lambda: minimal_perturbations(X, y, Xt + 1e-9j, yt, None, device="cpu"),
        "box": lambda: minimal_perturbations(X, y, Xt, yt, None, box=(0.0, 1 + 1j), device="cpu"),
    }


@pytest.mark.parametrize("case", list(_complex_cases()))
def test_complex_input_is_rejected(case):
    """The rejection comes before numpy's ComplexWarning: nothing is truncated first."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        with pytest.raises(ValueError, match="complex"):
            _complex_cases()[case]()
