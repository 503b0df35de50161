"""Certified <= exact <= attack (arml_core.evaluation.gap, arml_core.plots_gap)."""
from __future__ import annotations

import numpy as np
import pytest

from arml_core import load_dataset
from arml_core.evaluation.gap import (EXACT_KNN_APP_MAX_TRAIN, ExactKNNPlan, exact_knn_one, exact_knn_plan,
                                      exact_knn_radii, gap_summary, gap_table, robust_error_interval)
from arml_core.knn import MahalanobisKNN
from arml_core.metric import robust_error_curve
from arml_core.plots_gap import gap_figure
from arml_core.robustness import attack


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_train=60, n_test=20, seed=3)


def test_plan_offers_exact_only_for_k_above_one_and_small_training_sets():
    assert not exact_knn_plan(50, 10, 1).offered
    assert not exact_knn_plan(EXACT_KNN_APP_MAX_TRAIN + 1, 10, 3).offered
    p = exact_knn_plan(100, 60, 3, budget_s=30)
    assert p.offered and p.default_on and p.max_seconds_per_point == pytest.approx(0.5)
    assert p.worst_case_s == pytest.approx(30)
    big = exact_knn_plan(100, 10_000, 5)
    assert big.offered and not big.default_on and big.max_seconds_per_point == pytest.approx(0.1)


def test_interval_curves_bracket_every_radius_between_the_bounds():
    rng = np.random.default_rng(0)
    exact = rng.uniform(0, 1, 200)
    lower, upper = exact * rng.uniform(0.5, 1, 200), exact * rng.uniform(1, 2, 200)
    grid = np.linspace(0, 2, 41)
    lo, hi = robust_error_interval(lower, upper, grid)
    true = robust_error_curve(exact, grid)
    assert np.all(lo <= true) and np.all(true <= hi) and np.any(lo < hi)
    same_lo, same_hi = robust_error_interval(exact, exact, grid)
    assert np.array_equal(same_lo, same_hi) and np.array_equal(same_lo, true)
    with pytest.raises(ValueError, match="lower > upper"):
        robust_error_interval(upper, lower, grid)
    with pytest.raises(ValueError, match="NaN"):
        robust_error_interval(np.array([np.nan]), np.array([1.0]), grid)


@pytest.mark.parametrize("K", [3, 5])
def test_certified_le_exact_le_attack_on_every_point(moons, K):
    M = np.diag([1.0, 2.5])
    res = exact_knn_radii(moons, M, K)
    att = attack(moons.X_train, moons.y_train, moons.X_test, moons.y_test, M, K, method="region")
    norms = np.where(att.success, att.norms, np.inf)
    tol = 1e-7
    assert np.all(res.certified <= res.lower + tol)
    assert np.all(res.lower <= res.upper + tol)
    assert np.all(res.upper <= norms + tol)
    # proven points: the witness flips the K-NN vote, at the proven radius
    knn = MahalanobisKNN(M, n_neighbors=K).fit(moons.X_train, moons.y_train)
    ok = res.proven & (res.upper > 0)
    assert ok.sum() >= 5
    adv = moons.X_test[ok] + res.deltas[ok]
    assert np.all(knn.predict(adv) != moons.y_test[ok])
    s = gap_summary(res.certified, res, norms)
    assert s["proven"] == ok.sum() and s["correct"] == int((res.upper > 0).sum())
    assert s["mean_certified"] <= s["mean_exact"] + tol <= s["mean_attack"] + 2 * tol


def test_unproven_points_are_intervals_in_the_table(moons):
    tight = ExactKNNPlan(True, True, max_qp=1, max_seconds_per_point=10.0, worst_case_s=0, reason="")
    res = exact_knn_radii(moons, None, 5, plan=tight)
    assert not res.proven.all()
    assert np.all(np.isnan(res.norms[~res.proven]))
    grid = [0.0, 0.1, 0.2, 0.3]
    table = gap_table({"euclidean": res.certified}, {"euclidean": res}, {}, grid)
    assert list(table.index.get_level_values("bound")) == ["certified", "exact"]
    lo, hi = robust_error_interval(res.lower, res.upper, grid)
    for g, a, b in zip(grid, lo, hi):
        cell = table.loc[("euclidean", "exact"), f"{g:g}"]
        assert cell == (f"{100 * a:.1f}" if a == b else f"{100 * a:.1f}-{100 * b:.1f}")
    assert any("-" in table.loc[("euclidean", "exact"), f"{g:g}"] for g in grid)
    fig = gap_figure({"euclidean": res.certified}, {"euclidean": res}, grid=np.linspace(0, 0.3, 31))
    names = [t.name for t in fig.data]
    assert any("unproven" in (n or "") for n in names)
    assert any(t.fill == "tonexty" for t in fig.data)


def test_one_point_search_matches_the_test_set_search(moons):
    M = np.diag([1.0, 2.5])
    res = exact_knn_radii(moons, M, 3)
    i = int(np.flatnonzero(res.proven & (res.upper > 0))[0])
    one = exact_knn_one(moons.X_train, moons.y_train, moons.X_test[i], moons.y_test[i], M, 3)
    assert one.proven[0]
    assert one.upper[0] == pytest.approx(res.upper[i], rel=1e-7)


def test_exact_knn_radii_rejects_k1_and_large_training_sets(moons):
    with pytest.raises(ValueError, match="K = 1"):
        exact_knn_radii(moons, None, 1)
    no = ExactKNNPlan(False, False, 1, 0.0, 0.0, "too big")
    with pytest.raises(ValueError, match="too big"):
        exact_knn_radii(moons, None, 3, plan=no)
