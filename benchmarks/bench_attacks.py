"""Empirical attacks on Mahalanobis K-NN (K = 11) on pendigits, beside the certified bound.

    python benchmarks/bench_attacks.py [--n-test 1000] [--methods region,boundary]
        [--n-boundary 100] [--boundary-steps 5000] [--arml-epochs 1000] [--metric PATH]
        [--save-metric PATH] [--threads 1] [--device auto]

Full pendigits training set, the first ``--n-test`` points of the test split shuffled with
``random_state=42`` (ARML protocol), two metrics: Euclidean and ARML (trained here with
``ARML(random_state=42, n_epochs=--arml-epochs)``, or read from ``--metric``: an ``.npz``
written by ``arml_core.persistence.save_metric`` or an ``.npy`` holding ``M``).  For each metric:

* the ``region`` attack on every test point, the decision-based black-box attacks
  (``boundary``, ``hopskipjump``) on the first ``--n-boundary`` points (they are slow);
* mean / median attack norm over the correctly classified points, success rate, time per
  point (wall clock and CPU time of this process, which is robust to other load);
* the fraction of points where ``region`` is no larger than each black-box attack
  (``+1e-6`` relative), on the black-box subsample;
* the empirical robust error curves on the grid 0, 0.1, ..., 0.5 next to the certified one
  (``certify.certified_radii``), and the gap certified - empirical (>= 0: the certified
  radius is a lower bound of every attack norm, so the certified error is the larger).

Prints plain-text tables; writes nothing unless ``--save-metric`` is given.  Skips cleanly
when the data are absent.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import load_or_skip, machine, table

GRID = np.round(np.arange(6) * 0.1, 10)


def timed(fn, *args, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def load_metric_file(path: str, D: int) -> np.ndarray:
    """``M`` from an ``.npz`` (save_metric) or an ``.npy``, read by arml_core.persistence
    (headers checked before any array is read, nothing unpickled); a bad file is a message."""
    from arml_core.metric import metric_from_components
    from arml_core.persistence import load_metric, load_npy

    p = Path(path)
    try:
        if p.suffix == ".npz":
            G, _ = load_metric(p, n_features=D)
            return metric_from_components(G)
        M = load_npy(p, n_features=D)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--metric {path}: {exc}") from None
    if M.shape != (D, D):
        raise SystemExit(f"--metric {path}: expected a {D}x{D} matrix M, got shape {M.shape}")
    return M


def arml_metric(ds, args):
    from arml_core.learners import ARML

    if args.metric:
        return load_metric_file(args.metric, ds.n_features), f"ARML (from {args.metric})"
    est, wall, _ = timed(ARML(n_epochs=args.arml_epochs, random_state=42, device=args.device).fit,
                         ds.X_train, ds.y_train)
    M = est.get_mahalanobis_matrix()
    if args.save_metric:
        np.save(args.save_metric, M)
    print(f"ARML trained: {args.arml_epochs} epochs in {wall:.1f} s"
          + (f" (M saved to {args.save_metric})" if args.save_metric else ""))
    return M, f"ARML ({args.arml_epochs} epochs, random_state=42)"


def stats(res, sel):
    att = sel & ~res.misclassified
    ok = att & res.success
    nz = res.norms[ok]
    return dict(
        n=int(sel.sum()),
        attacked=int(att.sum()),
        success=float(ok.sum() / max(1, att.sum())),
        mean=float(nz.mean()) if len(nz) else float("nan"),
        median=float(np.median(nz)) if len(nz) else float("nan"),
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--methods", default="region,boundary", help="comma list of region, boundary, hopskipjump")
    p.add_argument("--n-boundary", type=int, default=100, help="test points given to the black-box attacks")
    p.add_argument("--boundary-steps", type=int, default=5000)
    p.add_argument("--hsj-steps", type=int, default=40)
    p.add_argument("--K", type=int, default=11)
    p.add_argument("--arml-epochs", type=int, default=1000)
    p.add_argument("--metric", default=None, help=".npz (save_metric) or .npy (M) instead of training ARML")
    p.add_argument("--save-metric", default=None, help="save the trained ARML matrix M here (.npy)")
    p.add_argument("--skip-euclidean", action="store_true")
    p.add_argument("--skip-arml", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    a = p.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from arml_core.robustness.attacks import ATTACKS, attack
    from arml_core.robustness.certify import certified_radii
    from arml_core.knn import MahalanobisKNN

    bad = [m for m in methods if m not in ATTACKS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from {list(ATTACKS)}")
    ds = load_or_skip("pendigits", n_test=a.n_test)
    X, y, Xt, yt = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    n = len(Xt)
    n_bb = min(a.n_boundary, n)
    K = a.K
    print(f"pendigits: {len(X)} train, {n} test (shuffled, random_state=42), K = {K}; {machine()}")
    print(f"region: all {n} test points; black-box attacks ({', '.join(m for m in methods if m != 'region') or 'none'}):"
          f" the first {n_bb} of them; boundary steps = {a.boundary_steps}, hopskipjump steps = {a.hsj_steps}")
    print("norms: over the correctly classified points that the attack flipped; every adversarial point "
          "is verified with MahalanobisKNN; time per point over all points given to the attack\n")

    metrics = []
    if not a.skip_euclidean:
        metrics.append(("Euclidean", np.eye(ds.n_features)))
    if not a.skip_arml:
        M, label = arml_metric(ds, a)
        metrics.append((label, M))

    settings = {"boundary": dict(steps=a.boundary_steps), "hopskipjump": dict(steps=a.hsj_steps), "region": {}}
    summary_rows, cmp_rows, curve_rows = [], [], []
    for name, M in metrics:
        cert, cw, cc = timed(certified_radii, X, y, Xt, yt, M, K, device=a.device)
        results = {}
        for m in methods:
            npts = n if m == "region" else n_bb
            res, w, c = timed(attack, X, y, Xt[:npts], yt[:npts], M, K, method=m, box=(0.0, 1.0),
                              device=a.device, **settings[m])
            results[m] = res
            s = stats(res, np.ones(npts, dtype=bool))
            summary_rows.append([name, m, npts, s["attacked"], f"{s['success']:.3f}", f"{s['mean']:.4f}",
                                 f"{s['median']:.4f}", f"{1000 * w / npts:.1f}", f"{1000 * c / npts:.1f}",
                                 res.n_rejected])
        correct = MahalanobisKNN(M, K, device=a.device).fit(X, y).predict(Xt) == yt
        s = stats_cert(cert, correct)
        summary_rows.append([name, "certified (lower bound)", n, s["attacked"], "-", f"{s['mean']:.4f}",
                             f"{s['median']:.4f}", f"{1000 * cw / n:.1f}", f"{1000 * cc / n:.1f}", "-"])
        if "region" in results:
            reg = results["region"]
            for m in methods:
                if m == "region":
                    continue
                bb = results[m]
                sub = ~bb.misclassified
                r_n, b_n = reg.norms[:n_bb][sub], bb.norms[sub]
                le = r_n <= b_n * (1 + 1e-6)
                fin = np.isfinite(r_n) & np.isfinite(b_n)
                cmp_rows.append([name, f"region vs {m}", int(sub.sum()), f"{le.mean():.3f}",
                                 f"{np.mean(r_n[fin] / b_n[fin]):.3f}", f"{np.median(r_n[fin] / b_n[fin]):.3f}",
                                 f"{np.max(r_n[fin] / b_n[fin]):.3f}"])
            cert_curve = _curve(cert)
            emp = reg.robust_error(GRID)
            curve_rows.append([name, f"certified (n={n})"] + [f"{v:.3f}" for v in cert_curve])
            curve_rows.append([name, f"region (n={n})"] + [f"{v:.3f}" for v in emp])
            curve_rows.append([name, "gap certified - region"] + [f"{v:+.3f}" for v in cert_curve - emp])
            assert np.all(cert <= reg.norms * (1 + 1e-9) + 1e-12), "certified radius above an attack norm"
        bbs = [m for m in methods if m != "region"]
        if bbs:
            cert_sub = _curve(cert[:n_bb])
            curve_rows.append([name, f"certified (first {n_bb})"] + [f"{v:.3f}" for v in cert_sub])
            if "region" in results:
                curve_rows.append([name, f"region (first {n_bb})"]
                                  + [f"{v:.3f}" for v in _curve(results["region"].norms[:n_bb])])
            for m in bbs:
                emp = results[m].robust_error(GRID)
                curve_rows.append([name, f"{m} (first {n_bb})"] + [f"{v:.3f}" for v in emp])
                curve_rows.append([name, f"gap certified - {m}"] + [f"{v:+.3f}" for v in cert_sub - emp])

    print("Attack norms and speed (ms per point: wall clock / CPU time of this process)")
    print(table(["metric", "method", "points", "attacked", "success", "mean norm", "median norm",
                 "ms/pt wall", "ms/pt CPU", "rejected"], summary_rows))
    if cmp_rows:
        print("\nRegion vs black-box attacks, on the black-box subsample (correctly classified points)")
        print(table(["metric", "comparison", "points", "region <= other", "mean ratio", "median ratio",
                     "max ratio"], cmp_rows))
    print("\nRobust error (fraction of test points with radius <= r); certified: lower bound "
          "(Theorem 1); empirical: attack norms")
    print(table(["metric", "curve"] + [f"r={r:g}" for r in GRID], curve_rows))


def _curve(norms):
    return (np.asarray(norms)[None, :] <= GRID[:, None]).mean(1)


def stats_cert(cert, correct):
    att = correct
    return dict(attacked=int(att.sum()), mean=float(cert[att].mean()) if att.any() else float("nan"),
                median=float(np.median(cert[att])) if att.any() else float("nan"))


if __name__ == "__main__":
    main()
