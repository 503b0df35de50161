"""Tests of the empirical attacks on Mahalanobis K-NN (arml_core.attacks)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from arml_core.robustness.attacks import (
    ATTACKS,
    AttackResult,
    BoundaryAttack,
    HopSkipJumpAttack,
    KNNModule,
    RegionAttack,
    _Problem,
    _region_run,
    _RegionSolver,
    attack,
    make_attack,
)
from arml_core.robustness.certify import certified_radii
from arml_core.robustness.exact import minimal_perturbations
from arml_core.knn import MahalanobisKNN
from arml_core.metric import components_from_metric, metric_from_components
from arml_core.metric import robust_error_curve as empirical_robust_error


def make_problem(seed, D=3, n_classes=3, n_train=90, n_test=14, metric="full", spread=0.18):
    """Gaussian blobs in [0, 1]^D (clipped), a random PSD metric."""
    rng = np.random.default_rng(seed)
    centres = 0.2 + 0.6 * rng.random((n_classes, D))

    def draw(n):
        lab = rng.integers(0, n_classes, n)
        lab[:n_classes] = np.arange(n_classes)
        return np.clip(centres[lab] + spread * rng.standard_normal((n, D)), 0.0, 1.0), lab

    X, y = draw(n_train)
    Xt, yt = draw(n_test)
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


def sklearn_predict(X, y, Z, M, K):
    G = components_from_metric(M)
    return KNeighborsClassifier(n_neighbors=K, algorithm="brute").fit(X @ G.T, y).predict(Z @ G.T)


def check_result(res, X, y, Xt, yt, M, K, box=None):
    """The invariants every AttackResult must satisfy."""
    n, D = Xt.shape
    assert isinstance(res, AttackResult)
    assert res.norms.shape == (n,) and res.X_adv.shape == (n, D) and res.success.shape == (n,)
    pred = MahalanobisKNN(M, K, device="cpu").fit(X, y).predict(Xt)
    np.testing.assert_array_equal(res.misclassified, pred != yt)
    np.testing.assert_array_equal(res.success, np.isfinite(res.norms))
    assert np.all(res.norms[res.misclassified] == 0)
    np.testing.assert_array_equal(res.X_adv[res.misclassified], Xt[res.misclassified])
    assert np.all(np.isnan(res.X_adv[~res.success]))
    att = res.success & ~res.misclassified
    assert np.all(res.norms[att] > 0)
    np.testing.assert_allclose(res.norms[att], np.linalg.norm(res.X_adv[att] - Xt[att], axis=1), rtol=1e-12)
    if att.any():
        Z = res.X_adv[att]
        assert np.all(MahalanobisKNN(M, K, device="cpu").fit(X, y).predict(Z) != yt[att])
        assert np.all(sklearn_predict(X, y, Z, M, K) != yt[att])
        if box is not None:
            assert np.all(Z >= box[0]) and np.all(Z <= box[1])


# --------------------------------------------------------------------------- region, K = 1
@pytest.mark.parametrize("box", [None, (0.0, 1.0)], ids=["free", "box01"])
@pytest.mark.parametrize("seed,n_classes,metric", [(0, 2, "full"), (1, 3, "lowrank"), (2, 4, "identity")])
def test_region_k1_equals_exact_minimal_perturbation(seed, n_classes, metric, box):
    X, y, Xt, yt, M = make_problem(seed, D=3, n_classes=n_classes, metric=metric)
    res = attack(X, y, Xt, yt, M, 1, box=box, device="cpu")
    exact, _ = minimal_perturbations(X, y, Xt, yt, M, box=box, device="cpu")
    check_result(res, X, y, Xt, yt, M, 1, box)
    assert (exact > 0).sum() >= 5
    np.testing.assert_allclose(res.norms, exact, rtol=1e-5, atol=0)
    assert res.n_rejected == 0


@pytest.mark.parametrize("box", [None, (0.0, 1.0)], ids=["free", "box01"])
@pytest.mark.parametrize("seed,n_classes,metric", [(3, 2, "full"), (4, 3, "lowrank")])
def test_generic_region_qp_at_k1_equals_exact(seed, n_classes, metric, box):
    """The generic region QP (J = S = {n}, all negatives) reproduces eps* for K = 1."""
    X, y, Xt, yt, M = make_problem(seed, D=3, n_classes=n_classes, metric=metric, n_train=70, n_test=12)
    prob = _Problem(X, y, Xt, yt, M, 1, None if box is None else (np.zeros(3), np.ones(3)), "cpu")
    idx = np.flatnonzero(prob.predict_enc(Xt) == prob.yt_enc)
    cands, _ = _region_run(RegionAttack(), prob, idx, None, exhaustive_k1=True)
    exact, _ = minimal_perturbations(X, y, Xt[idx], yt[idx], M, box=box, device="cpu")
    got = np.array([np.linalg.norm(c[0] - Xt[i]) for c, i in zip(cands, idx)])
    assert len(idx) >= 5
    np.testing.assert_allclose(got, exact, rtol=1e-5)
    pred = MahalanobisKNN(M, 1, device="cpu").fit(X, y).predict(np.array([c[0] for c in cands]))
    assert np.all(pred != yt[idx])  # the margin makes every solution strictly adversarial


# --------------------------------------------------------------------------- region, K > 1
@pytest.mark.parametrize("K", [3, 5, 11])
@pytest.mark.parametrize("n_classes", [2, 4], ids=["binary", "multiclass"])
def test_region_flips_knn_and_sklearn(K, n_classes):
    X, y, Xt, yt, M = make_problem(10 * K + n_classes, D=3, n_classes=n_classes, n_train=110, n_test=16)
    res = attack(X, y, Xt, yt, M, K, device="cpu")
    check_result(res, X, y, Xt, yt, M, K)
    assert (~res.misclassified).sum() >= 6
    assert res.success.all(), "the region attack should flip every correctly classified point here"
    assert res.method == "region" and res.n_neighbors == K and res.time_s > 0


@pytest.mark.parametrize("K", [3, 5])
def test_region_respects_box(K):
    X, y, Xt, yt, M = make_problem(7, D=4, n_classes=3, n_train=100, n_test=14, spread=0.3)
    box = (0.0, 1.0)
    assert np.sum((Xt == 0) | (Xt == 1)) >= 5  # points on the faces of the box
    res = attack(X, y, Xt, yt, M, K, box=box, device="cpu")
    check_result(res, X, y, Xt, yt, M, K, box)
    assert res.success.all() and res.n_rejected == 0


def test_region_per_feature_box_and_lower_bound():
    X, y, Xt, yt, M = make_problem(8, D=3, n_classes=2, n_train=80, n_test=12)
    lo, hi = np.zeros(3), np.array([1.0, 1.0, 0.95])
    Xt = np.clip(Xt, lo, hi)
    res = attack(X, y, Xt, yt, M, 3, box=(lo, hi), device="cpu")
    check_result(res, X, y, Xt, yt, M, 3, (lo, hi))
    cert = certified_radii(X, y, Xt, yt, M, 3, device="cpu")
    assert np.all(cert <= res.norms * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_certified_radius_never_exceeds_attack_norm(seed):
    """Property: certified <= eps* <= attack norm, random PSD metrics (some low-rank), K and classes."""
    rng = np.random.default_rng(100 + seed)
    D = int(rng.integers(2, 6))
    n_classes = int(rng.integers(2, 5))
    K = int(rng.choice([3, 5, 7]))
    metric = ["full", "lowrank", "identity"][seed % 3]
    X, y, Xt, yt, M = make_problem(200 + seed, D=D, n_classes=n_classes, n_train=int(rng.integers(60, 120)),
                                   n_test=12, metric=metric, spread=float(rng.uniform(0.1, 0.3)))
    M = M * float(rng.uniform(0.2, 5.0))
    res = attack(X, y, Xt, yt, M, K, device="cpu")
    check_result(res, X, y, Xt, yt, M, K)
    cert = certified_radii(X, y, Xt, yt, M, K, device="cpu")
    assert np.all(cert <= res.norms * (1 + 1e-9) + 1e-12), np.c_[cert, res.norms]


def test_region_qp_fast_matches_cvxpy():
    """Each region QP: the working-set LDP solver equals cvxpy/Clarabel (majority and plurality)."""
    X, y, Xt, yt, M = make_problem(21, D=3, n_classes=4, n_train=80, n_test=10)
    K = 5
    for box in (None, (np.zeros(3), np.ones(3))):
        prob = _Problem(X, y, Xt, yt, M, K, box, "cpu")
        fast = _RegionSolver(prob, RegionAttack())
        ref = _RegionSolver(prob, RegionAttack(solver="cvxpy"))
        n_cmp = 0
        kinds = set()
        for i in np.flatnonzero(prob.predict_enc(Xt) == prob.yt_enc)[:6]:
            x, yi = Xt[i], int(prob.yt_enc[i])
            d = prob.dists(x[None])[0]
            for cand in fast.candidates(x, yi, d)[:8]:
                v1, d1 = fast.solve(x, cand, yi, d, math.inf)
                v2, d2 = ref.solve(x, cand, yi, d, math.inf)
                assert math.isfinite(v1) == math.isfinite(v2)
                if math.isfinite(v1):
                    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-8)
                    n_cmp += 1
                    kinds.add("plurality" if len(cand[3]) or len(cand[1]) < prob.k else "majority")
        assert n_cmp >= 10
    assert "majority" in kinds


def test_region_cvxpy_solver_end_to_end():
    X, y, Xt, yt, M = make_problem(22, D=2, n_classes=2, n_train=60, n_test=8)
    a = attack(X, y, Xt, yt, M, 3, device="cpu", n_candidates=4)
    b = attack(X, y, Xt, yt, M, 3, device="cpu", n_candidates=4, solver="cvxpy")
    check_result(b, X, y, Xt, yt, M, 3)
    np.testing.assert_allclose(a.norms, b.norms, rtol=1e-4)


def test_region_plurality_flip_multiclass():
    """A plurality region (the attacked class keeps a relative majority only) is valid."""
    X, y, Xt, yt, M = make_problem(23, D=3, n_classes=4, n_train=100, n_test=10)
    K = 5
    prob = _Problem(X, y, Xt, yt, M, K, None, "cpu")
    solver = _RegionSolver(prob, RegionAttack())
    n_plural = 0
    for i in np.flatnonzero(prob.predict_enc(Xt) == prob.yt_enc):
        x, yi = Xt[i], int(prob.yt_enc[i])
        d = prob.dists(x[None])[0]
        for cand in solver.candidates(x, yi, d):
            if len(cand[1]) >= prob.k:
                continue
            v, dl = solver.solve(x, cand, yi, d, math.inf)
            if dl is None:
                continue
            n_plural += 1
            assert prob.predict_enc((x + dl)[None])[0] != yi
            assert sklearn_predict(X, prob.y_enc, (x + dl)[None], M, K)[0] != yi
    assert n_plural >= 1


def test_region_settings_change_effort_not_validity():
    X, y, Xt, yt, M = make_problem(24, D=3, n_classes=3, n_train=90, n_test=10)
    small = attack(X, y, Xt, yt, M, 5, device="cpu", n_candidates=0, n_refine=0, explore=0.0)
    big = attack(X, y, Xt, yt, M, 5, device="cpu", method=RegionAttack(n_candidates=24, n_refine=5))
    for r in (small, big):
        check_result(r, X, y, Xt, yt, M, 5)
    ok = small.success & big.success
    assert np.mean(big.norms[ok] <= small.norms[ok] * (1 + 1e-6)) >= 0.8


# --------------------------------------------------------------------------- foolbox
@pytest.mark.parametrize("K,n_classes", [(1, 2), (3, 3), (5, 4)])
def test_knn_module_argmax_equals_knn_predict(K, n_classes):
    X, y, _, _, M = make_problem(30 + K, D=3, n_classes=n_classes, n_train=80)
    knn = MahalanobisKNN(M, K, device="cpu").fit(X, y)
    mod = KNNModule(knn, offset=-0.5, scale=2.0).eval()
    rng = np.random.default_rng(0)
    U = rng.random((400, 3))
    with torch.no_grad():
        got = mod(torch.as_tensor(U)).argmax(1).numpy()
        Xin = mod.to_input(torch.as_tensor(U)).numpy()
    np.testing.assert_allclose(Xin, -0.5 + 2.0 * U)
    np.testing.assert_array_equal(got, knn.predict_encoded(Xin))
    # vote ties (possible for K = 5 and 4 classes) go to the smallest class index
    assert {n for n, _ in mod.named_buffers()} >= {"G", "Z", "sq", "y"}


def test_knn_module_clamps_to_box():
    X, y, _, _, M = make_problem(33, D=2, n_classes=2, n_train=40)
    knn = MahalanobisKNN(M, 3, device="cpu").fit(X, y)
    mod = KNNModule(knn, lo=np.zeros(2), hi=np.array([1.0, 0.5])).eval()
    z = mod.to_input(torch.tensor([[1.5, 0.9], [-1.0, 0.2]], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(z, [[1.0, 0.5], [0.0, 0.2]])


def _two_blobs(seed=0, n_train=60, n_test=10):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_train // 2)
    X = np.clip(np.array([[0.3, 0.5], [0.7, 0.5]])[y] + 0.08 * rng.standard_normal((n_train, 2)), 0, 1)
    yt = np.arange(n_test) % 2
    Xt = np.clip(np.array([[0.3, 0.5], [0.7, 0.5]])[yt] + 0.05 * rng.standard_normal((n_test, 2)), 0, 1)
    return X, y, Xt, yt


@pytest.mark.parametrize("method,settings", [("boundary", dict(steps=1500)), ("hopskipjump", dict(steps=12))])
def test_foolbox_attack_success_and_norms(method, settings):
    """Two separated blobs, K = 1: the exact eps* is known; the black-box norms are close to it."""
    X, y, Xt, yt = _two_blobs()
    M = np.eye(2)
    res = attack(X, y, Xt, yt, M, 1, method=method, box=(0.0, 1.0), device="cpu", **settings)
    check_result(res, X, y, Xt, yt, M, 1, (0.0, 1.0))
    exact, _ = minimal_perturbations(X, y, Xt, yt, M, box=(0.0, 1.0), device="cpu")
    assert res.success.all()
    att = ~res.misclassified
    assert att.sum() >= 8
    assert np.all(res.norms[att] >= exact[att] * (1 - 1e-9))  # no attack beats eps*
    assert np.median(res.norms[att] / exact[att]) < 1.1
    assert res.info["no_starting_point"] == 0


def test_boundary_k3_multiclass_without_box_uses_data_bounds():
    X, y, Xt, yt, M = make_problem(40, D=2, n_classes=3, n_train=70, n_test=8)
    res = attack(X, y, Xt, yt, M, 3, method="boundary", steps=600, device="cpu")
    check_result(res, X, y, Xt, yt, M, 3)
    assert res.success.all()
    cert = certified_radii(X, y, Xt, yt, M, 3, device="cpu")
    assert np.all(cert <= res.norms * (1 + 1e-9) + 1e-12)
    region = attack(X, y, Xt, yt, M, 3, device="cpu")
    att = ~res.misclassified
    assert np.mean(region.norms[att] <= res.norms[att] * (1 + 1e-6)) >= 0.75


def test_foolbox_batch_with_unattackable_point_returns_the_others():
    """Point 0's only candidate start (n_start=1) is a training point outside the box whose
    clamped image is not adversarial: it is reported as failed, the rest are attacked."""
    rng = np.random.default_rng(1)
    X0 = np.c_[0.2 + 0.03 * rng.standard_normal(15), 0.85 + 0.03 * rng.standard_normal(15)]
    X0b = np.c_[0.3 + 0.05 * rng.standard_normal(15), 0.4 + 0.05 * rng.standard_normal(15)]
    X1 = np.c_[0.8 + 0.05 * rng.standard_normal(15), 0.4 + 0.05 * rng.standard_normal(15)]
    X2 = np.c_[0.2 + 0.03 * rng.standard_normal(15), 1.45 + 0.03 * rng.standard_normal(15)]
    X = np.vstack([X0, X0b, X1, X2])
    y = np.repeat([0, 0, 1, 2], 15)
    Xt = np.array([[0.2, 0.97], [0.3, 0.4], [0.8, 0.4], [0.32, 0.45]])
    yt = np.array([0, 0, 1, 0])
    box = (np.zeros(2), np.ones(2))
    res = attack(X, y, Xt, yt, None, 3, method="boundary", box=box, device="cpu", steps=300, n_start=1)
    check_result(res, X, y, Xt, yt, np.eye(2), 3, box)
    assert not res.success[0] and np.isinf(res.norms[0]) and np.isnan(res.X_adv[0]).all()
    assert res.success[1:].all()
    assert res.info["no_starting_point"] == 1
    # with more candidate starts the same point becomes attackable
    res2 = attack(X, y, Xt, yt, None, 3, method="boundary", box=box, device="cpu", steps=300, n_start=40)
    assert res2.success.all()


def test_foolbox_error_in_a_batch_only_costs_the_bad_point(monkeypatch):
    import foolbox as fb

    X, y, Xt, yt = _two_blobs(seed=3, n_test=6)
    real_run = fb.attacks.BoundaryAttack.run
    bad = torch.as_tensor(Xt[2])

    def flaky_run(self, model, inputs, criterion, **kw):
        raw = inputs.raw if hasattr(inputs, "raw") else inputs
        if any(torch.allclose(r, bad) for r in raw):
            raise ValueError("simulated foolbox failure")
        return real_run(self, model, inputs, criterion, **kw)

    monkeypatch.setattr(fb.attacks.BoundaryAttack, "run", flaky_run)
    res = attack(X, y, Xt, yt, None, 1, method="boundary", box=(0.0, 1.0), device="cpu", steps=200)
    assert not res.success[2] and np.isinf(res.norms[2])
    others = np.arange(6) != 2
    assert res.success[others].all()
    assert res.info["batch_errors"] >= 2


def test_foolbox_seeded_and_no_global_rng_side_effect():
    X, y, Xt, yt = _two_blobs(seed=4, n_test=4)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = attack(X, y, Xt, yt, None, 1, method="hopskipjump", box=(0.0, 1.0), device="cpu", steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = attack(X, y, Xt, yt, None, 1, method="hopskipjump", box=(0.0, 1.0), device="cpu", steps=5)
    np.testing.assert_array_equal(a.norms, b.norms)
    c = attack(X, y, Xt, yt, None, 1, method=HopSkipJumpAttack(steps=5, random_state=7), box=(0.0, 1.0),
               device="cpu")
    check_result(c, X, y, Xt, yt, np.eye(2), 1, (0.0, 1.0))


def test_unverified_points_are_failures(monkeypatch):
    """An attack output that does not flip the real classifier never counts as a success."""
    import arml_core.robustness.attacks as A

    X, y, Xt, yt = _two_blobs(seed=5, n_test=6)

    def fake_run(self, prob, idx, progress):
        return [[prob.X_test[i] + 1e-3] for i in idx], {}  # barely moved: still correct

    monkeypatch.setattr(A.RegionAttack, "_run", fake_run)
    res = attack(X, y, Xt, yt, None, 1, device="cpu")
    att = ~res.misclassified
    assert att.any()
    assert not res.success[att].any() and np.all(np.isinf(res.norms[att]))
    assert res.n_rejected == att.sum()


# --------------------------------------------------------------------------- API and results
def test_result_robust_error_and_progress():
    X, y, Xt, yt, M = make_problem(50, D=2, n_classes=3, n_train=60, n_test=10)
    calls = []
    res = attack(X, y, Xt, yt, M, 3, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (10, 10)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    curve = res.robust_error([0.0, 0.1, 0.5, 10.0])
    assert curve[0] == pytest.approx(res.misclassified.mean())
    assert np.all(np.diff(curve) >= 0)
    np.testing.assert_array_equal(curve, empirical_robust_error(res.norms, [0.0, 0.1, 0.5, 10.0]))
    assert 0.0 <= res.success_rate <= 1.0 and res.time_per_point > 0
    assert res.settings["n_candidates"] == RegionAttack().n_candidates


def test_attack_objects_are_callable_and_equivalent():
    X, y, Xt, yt, M = make_problem(51, D=2, n_classes=2, n_train=50, n_test=6)
    a = RegionAttack(n_candidates=4)(X, y, Xt, yt, M, 3, device="cpu")
    b = attack(X, y, Xt, yt, M, 3, method="region", n_candidates=4, device="cpu")
    np.testing.assert_array_equal(a.norms, b.norms)
    assert set(ATTACKS) == {"region", "boundary", "hopskipjump"}
    assert isinstance(make_attack("boundary", steps=10), BoundaryAttack)


def test_empty_test_set_and_unknown_labels():
    X, y, Xt, yt, M = make_problem(52, D=2, n_classes=2, n_train=40, n_test=4)
    res = attack(X, y, Xt[:0], yt[:0], M, 3, device="cpu")
    assert res.norms.shape == (0,) and res.X_adv.shape == (0, 2)
    yt2 = yt.copy()
    yt2[0] = 99  # a label the classifier cannot output: misclassified, norm 0
    res = attack(X, y, Xt, yt2, M, 3, device="cpu")
    assert res.misclassified[0] and res.norms[0] == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="pgd"), "unknown attack method"),
        (dict(n_neighbors=4), "odd"),
        (dict(n_neighbors=0), "odd"),
        (dict(box=(0.0, 0.5)), "outside the box"),
        (dict(box=(1.0, 0.0)), "lo <= hi"),
        (dict(box=0.5), "pair"),
        (dict(steps=10), "unknown setting"),
        (dict(method="boundary", steps=0), "steps"),
        (dict(n_candidates=-1), "n_candidates"),
        (dict(solver="mosek"), "solver"),
        (dict(method=RegionAttack(), n_refine=2), "attack object"),
        (dict(method="boundary", bounds=(1.0, 0.0)), "bounds"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_arguments(kwargs, match):
    X, y, Xt, yt, M = make_problem(60, D=2, n_classes=2, n_train=40, n_test=4)
    kwargs = dict(kwargs)
    K = kwargs.pop("n_neighbors", 3)
    with pytest.raises(ValueError, match=match):
        attack(X, y, Xt, yt, M, K, **kwargs)


def test_bad_data():
    X, y, Xt, yt, M = make_problem(61, D=2, n_classes=2, n_train=40, n_test=4)
    bad = Xt.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack(X, y, bad, yt, M, 3)
    with pytest.raises(ValueError, match="features"):
        attack(X, y, Xt[:, :1], yt, M, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        attack(X, y[:-1], Xt, yt, M, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        attack(X, y, Xt, yt[:-1], M, 3)
    with pytest.raises(ValueError, match="square|features"):
        attack(X, y, Xt, yt, np.eye(3), 3)
    with pytest.raises(ValueError, match="larger than class"):
        attack(X[:6], np.array([0, 0, 0, 0, 1, 1]), Xt, yt, M, 3)
