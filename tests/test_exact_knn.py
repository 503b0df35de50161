"""Tests of the exact minimal perturbation of Mahalanobis K-NN for K > 1 (arml_core.robustness.exact_knn).

The brute force of the 2-D tests and its tolerance
--------------------------------------------------
:func:`brute_force_radius` casts ``N_DIR`` equally spaced rays from ``x``, scans each on
``N_SCAN`` steps for the first point that ``MahalanobisKNN(M, K)`` labels ``!= y`` and bisects
between it and the point before (``N_BISECT`` halvings); then, ``ZOOM`` times, it takes the
``ZOOM_BEST`` best local minima over the rays and casts ``ZOOM_POINTS`` rays over two
angular steps on either side of each, scanning only a window of ``WINDOW`` grid spacings
below that minimum (so the grid gets ``(ZOOM_POINTS - 1) / 4`` times finer in angle and
``N_SCAN / WINDOW`` times finer in radius at every stage).

Its value ``bf`` is the distance of a point that the classifier itself labels ``!= y`` (the
adversarial end of a bisection), so ``eps* <= bf`` with no tolerance at all: the assertion
``exact <= bf`` (to the QP tolerance) is the test of completeness -- the search missed no
closer cell, and it holds whatever the grid. The other side depends on the grid: the
adversarial set near the minimiser ``z*`` contains a wedge with apex ``z*`` (a half-disc
when ``z*`` is interior to a facet; the cone of a vertex otherwise, half-opening ``b``), and
a wedge contains a grid point within ``h / sin(b)`` of its apex once the grid spacing ``h``
(radial step, or ``eps*`` times the angular step) is small, so
``bf <= eps* + h_final / sin(b) + BISECT``. The final spacing is below ``1e-5 * eps*`` here,
and ``REL_TOL = 1e-4`` allows wedges down to ``b`` of about 6 degrees (the 2-D toys have
vertex optima whose adversarial wedge is only ~1e-7 long along the ray from ``x``, which a
plain 720-ray scan misses by up to 1 %). The zoom follows the best local minima, so a
basin whose coarse minimum is not among the ``ZOOM_BEST`` best could be missed: that would
only make ``bf`` larger (a failure of this side, never a false pass of the first).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons
from sklearn.exceptions import ConvergenceWarning

from arml_core.data import load_dataset
from arml_core.knn import MahalanobisKNN
from arml_core.robustness import ExactKNNResult, attack, minimal_perturbations, verify_knn_perturbations

N_DIR, N_SCAN, N_BISECT = 720, 200, 40
ZOOM, ZOOM_POINTS, ZOOM_BEST, WINDOW = 3, 41, 6, 8
REL_TOL = 1e-4


def _hits(knn, x, y, theta, t0, t1):
    """Per direction ``theta``, the first distance in ``(t0, t1]`` (per ray) where the
    classifier labels ``x + t u(theta)`` != y: a scan on ``N_SCAN`` steps, then bisection
    (inf: none found)."""
    U = np.stack([np.cos(theta), np.sin(theta)], 1)
    ts = t0[:, None] + (t1 - t0)[:, None] * np.linspace(1.0 / N_SCAN, 1.0, N_SCAN)[None, :]
    pts = x[None, None, :] + ts[:, :, None] * U[:, None, :]
    adv = (knn.predict(pts.reshape(-1, 2)) != y).reshape(len(theta), N_SCAN)
    has = adv.any(1)
    first = np.argmax(adv, 1)
    rows = np.arange(len(theta))
    hi = ts[rows, first]
    lo = np.where(first > 0, ts[rows, np.maximum(first - 1, 0)], t0)
    for _ in range(N_BISECT):
        mid = 0.5 * (lo + hi)
        a = knn.predict(x[None, :] + mid[:, None] * U) != y
        hi, lo = np.where(a, mid, hi), np.where(a, lo, mid)
    return np.where(has, hi, np.inf)


def _local_minima(r, n_blocks):
    """Indices of the local minima of ``r`` within each of ``n_blocks`` equal blocks, best first."""
    blocks = r.reshape(n_blocks, -1)
    left = np.concatenate([np.full((n_blocks, 1), np.inf), blocks[:, :-1]], 1)
    right = np.concatenate([blocks[:, 1:], np.full((n_blocks, 1), np.inf)], 1)
    idx = np.flatnonzero(((blocks <= left) & (blocks <= right) & np.isfinite(blocks)).ravel())
    return idx[np.argsort(r[idx], kind="stable")]


def brute_force_radius(knn, x, y, t_max):
    """The smallest distance at which a ray of the (zoomed) direction grid meets a point the
    classifier labels != y (see the module docstring)."""
    step = 2 * np.pi / N_DIR
    theta = np.arange(N_DIR) * step
    r = _hits(knn, x, y, theta, np.zeros(N_DIR), np.full(N_DIR, t_max))
    best = float(r.min())
    h = max(t_max / N_SCAN, best * step)  # grid spacing of the stage
    n_blocks = 1
    for _ in range(ZOOM):
        cand = _local_minima(r, n_blocks)[:ZOOM_BEST]
        theta = (theta[cand][:, None] + np.linspace(-2 * step, 2 * step, ZOOM_POINTS)[None, :]).ravel()
        t1 = np.repeat(r[cand], ZOOM_POINTS)
        t0 = np.maximum(t1 - WINDOW * h, 0.0)
        r = _hits(knn, x, y, theta, t0, t1)
        n_blocks = len(cand)
        step *= 4.0 / (ZOOM_POINTS - 1)
        h = max(WINDOW * h / N_SCAN, best * step)
        best = min(best, float(r.min()))
    return best


def toy(kind, seed):
    if kind == "moons":
        X, y = make_moons(70, noise=0.25, random_state=seed)
    else:
        X, y = make_blobs(70, centers=3, cluster_std=1.6, random_state=seed)
    X = (X - X.min(0)) / (X.max(0) - X.min(0))
    return X[:58], y[:58], X[58:], y[58:]


METRICS = {
    "identity": np.eye(2),
    "full": np.array([[4.0, 1.0], [1.0, 0.5]]),
    "diag": np.diag([0.3, 3.0]),
}


@pytest.mark.parametrize("kind,metric,K", [("moons", "identity", 3), ("moons", "full", 5),
                                           ("blobs", "diag", 3), ("blobs", "full", 5)])
def test_exact_radius_equals_brute_force_on_2d(kind, metric, K):
    X, y, Xt, yt = toy(kind, 3)
    M = METRICS[metric]
    res = minimal_perturbations(X, y, Xt, yt, M, n_neighbors=K, device="cpu")
    assert isinstance(res, ExactKNNResult) and res.proven.all()
    knn = MahalanobisKNN(M, K, device="cpu").fit(X, y)
    checked = 0
    for i in np.flatnonzero(res.norms > 0):
        eps = res.norms[i]
        bf = brute_force_radius(knn, Xt[i], yt[i], 1.25 * eps)
        assert eps <= bf * (1 + 1e-9), f"point {i}: the classifier flips at {bf} < exact {eps}"
        assert bf <= eps * (1 + REL_TOL) + 1e-9, f"point {i}: brute force {bf} > exact {eps}"
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("name,n_train,K,min_proven", [
    ("iris", 60, 3, 1.0), ("iris", 60, 5, 0.5), ("wine", 60, 3, 1.0), ("wine", 60, 5, 0.0),
    ("digits", 100, 3, 1.0), ("digits", 100, 5, 1.0),
])
def test_certified_le_exact_le_attack(name, n_train, K, min_proven):
    """On every point: certified <= lower <= eps* <= upper, attack >= eps* (exact where proven;
    wine with K = 5 mostly hits the work limit: there the interval is what is checked)."""
    ds = load_dataset(name, n_train=n_train, n_test=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None, n_neighbors=K,
                                    device="cpu", max_qp=2000)
    att = attack(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None, K, method="region", device="cpu")
    ok = res.proven
    assert ok.mean() >= min_proven
    assert np.all(res.certified <= res.lower * (1 + 1e-9) + 1e-12)
    assert np.all(res.lower <= res.upper)
    np.testing.assert_array_equal(res.lower[ok], res.upper[ok])
    assert np.all(res.lower <= att.norms + 1e-7)  # eps* <= the attack's verified norm
    assert np.all(res.norms[ok] <= att.norms[ok] + 1e-7)
    np.testing.assert_array_equal(res.norms == 0, att.misclassified)  # the same clean errors
    assert np.all(np.isnan(res.norms[~ok]))
    assert verify_knn_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None,
                                    res.norms, res.deltas, K)[ok].all()
    assert not verify_knn_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None,
                                        res.norms, res.deltas, K)[~ok].any()  # NaN norms never verify


@pytest.mark.parametrize("metric", ["identity", "full"])
def test_perturbation_flips_with_a_strict_winner(metric):
    X, y, Xt, yt = toy("blobs", 5)
    M, K = METRICS[metric], 3
    norms, deltas = minimal_perturbations(X, y, Xt, yt, M, n_neighbors=K, device="cpu")
    knn = MahalanobisKNN(M, K, device="cpu").fit(X, y)
    sel = np.flatnonzero(norms > 0)
    assert len(sel) >= 5
    z = Xt[sel] + deltas[sel]
    assert np.all(knn.predict(z) != yt[sel])
    dist, _ = knn.kneighbors(z, n_neighbors=K + 1)
    assert np.all(dist[:, K] - dist[:, K - 1] > 1e-12)  # the K nearest are strictly the K nearest
    dn = np.linalg.norm(deltas[sel], axis=1)
    assert np.all(dn >= norms[sel] * (1 - 1e-12)) and np.all(dn <= norms[sel] + 1e-6)
    inside = Xt[sel] + ((1 - 1e-6) * norms[sel] / dn)[:, None] * deltas[sel]
    assert np.all(knn.predict(inside) == yt[sel])
    assert verify_knn_perturbations(X, y, Xt, yt, M, norms, deltas, K).all()
    bad = deltas.copy()
    bad[sel[0]] *= 0.5  # a perturbation inside the radius does not flip: verification fails
    assert not verify_knn_perturbations(X, y, Xt, yt, M, norms, bad, K)[sel[0]]


def test_box():
    X, y, Xt, yt = toy("moons", 7)
    free = minimal_perturbations(X, y, Xt, yt, None, n_neighbors=3, device="cpu")
    box = minimal_perturbations(X, y, Xt, yt, None, n_neighbors=3, device="cpu", box=(0.0, 1.0))
    assert box.proven.all() and np.all(box.norms >= free.norms * (1 - 1e-9))
    assert verify_knn_perturbations(X, y, Xt, yt, None, box.norms, box.deltas, 3, box=(0.0, 1.0)).all()
    narrow = minimal_perturbations(X, y, Xt, yt, None, n_neighbors=3, device="cpu", box=(0.0, [1.0, 0.6]))
    assert np.all(narrow.norms >= box.norms * (1 - 1e-9) - 1e-12)


def test_work_limit_returns_a_marked_interval():
    ds = load_dataset("wine", n_train=60, n_test=8)
    with pytest.warns(ConvergenceWarning, match="NOT proven"):
        res = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None, n_neighbors=3,
                                    device="cpu", max_qp=3)
    hit = ~res.proven
    assert hit.any() and np.all(np.isnan(res.norms[hit]))
    assert np.all(res.lower <= res.upper) and np.all(res.certified <= res.lower)
    assert set(res.info["limit_hit"]) == set(np.flatnonzero(hit).tolist())
    full = minimal_perturbations(ds.X_train, ds.y_train, ds.X_test, ds.y_test, None, n_neighbors=3, device="cpu")
    assert full.proven.all()
    assert np.all(res.lower <= full.norms * (1 + 1e-9)) and np.all(full.norms <= res.upper * (1 + 1e-9))
    norms, deltas = res  # unpacks like the K = 1 answer
    assert norms is res.norms and deltas is res.deltas


def test_k1_is_unchanged():
    X, y, Xt, yt = toy("blobs", 2)
    M = METRICS["full"]
    a = minimal_perturbations(X, y, Xt, yt, M, device="cpu")
    b = minimal_perturbations(X, y, Xt, yt, M, n_neighbors=1, device="cpu")
    assert isinstance(a, tuple) and isinstance(b, tuple)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_arguments():
    X, y, Xt, yt = toy("moons", 1)
    with pytest.raises(ValueError, match="n_neighbors > 1 only"):
        minimal_perturbations(X, y, Xt, yt, None, max_qp=10)
    with pytest.raises(ValueError, match="solver"):
        minimal_perturbations(X, y, Xt, yt, None, n_neighbors=3, solver="cvxpy")
    with pytest.raises(ValueError, match="odd"):
        minimal_perturbations(X, y, Xt, yt, None, n_neighbors=4)
    with pytest.raises(TypeError):
        minimal_perturbations(X, y, Xt, yt, None, n_neighbors=3, no_such_option=1)
