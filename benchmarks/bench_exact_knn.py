"""Exact K-NN robustness (K > 1) on small data: where it is feasible, and how tight Theorem 1
and the region attack are against it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_exact_knn.py [--n-test 30] [--max-qp 3000]
        [--datasets moons,blobs,iris,wine,digits] [--k 3,5,11] [--metrics euclidean,nca]

Data (built-ins, the paper's preprocessing): moons and blobs (2-D) subsampled to 100
training points, iris (105) and wine (124) in full, digits subsampled to 300 training points
(64-D); the first ``--n-test`` test points of each. Metrics: Euclidean and NCA (metric-learn,
fitted on the same training points). Per data set, metric and K, on the test points the
K-NN classifies correctly: the mean certified (ARML Theorem 1), exact and region-attack
radii over the points the exact search proved within the work limit (``--max-qp`` QPs per
point), the fraction of those where certified == exact and attack == exact (relative
tolerance ``1e-6``: the attack's margin is 1e-9 of the data scale), the fraction proven,
the mean relative width ``(upper - lower) / upper`` of the intervals of the unproven ones,
the median QPs and the ms per point of the exact search (certification included, attack
excluded). Prints a markdown table; writes no files.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import machine, table
from sklearn.exceptions import ConvergenceWarning

from arml_core.data import load_dataset
from arml_core.learners import make_learner
from arml_core.robustness.attacks import attack
from arml_core.robustness.exact import minimal_perturbations

SIZES = {"moons": 100, "blobs": 100, "iris": None, "wine": None, "digits": 300}
REL = 1e-6


def one_row(ds, name, metric, M, K, args):
    X, y, Xt, yt = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # unproven points are counted below
        res = minimal_perturbations(X, y, Xt, yt, M, n_neighbors=K, device="cpu", max_qp=args.max_qp)
    ms = 1000 * (time.perf_counter() - start) / len(Xt)
    att = attack(X, y, Xt, yt, M, K, method="region", device="cpu").norms
    correct = res.upper > 0
    ok = correct & res.proven
    unp = correct & ~res.proven
    if np.any(res.certified > res.lower * (1 + 1e-9) + 1e-12) or np.any(res.lower > att + 1e-7):
        raise SystemExit(f"soundness violated on {name}/{metric}/K={K}")
    ex = res.norms[ok]

    def same(a):
        return float(np.mean(np.abs(a[ok] - ex) <= REL * ex)) if ok.any() else float("nan")

    gap = float(np.mean((res.upper[unp] - res.lower[unp]) / res.upper[unp])) if unp.any() else 0.0
    return [f"{name} ({len(X)}x{X.shape[1]})", metric, K, int(correct.sum()),
            float(res.certified[ok].mean()) if ok.any() else float("nan"),
            float(ex.mean()) if ok.any() else float("nan"),
            float(att[ok].mean()) if ok.any() else float("nan"),
            same(res.certified), same(att), float(ok.sum() / max(1, correct.sum())), gap,
            int(np.median(res.n_qp[correct])) if correct.any() else 0, ms]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--max-qp", type=int, default=3000)
    ap.add_argument("--datasets", default=",".join(SIZES))
    ap.add_argument("--k", default="3,5,11")
    ap.add_argument("--metrics", default="euclidean,nca")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}; work limit {args.max_qp} QPs per point; {args.n_test} test points each")
    rows = []
    for name in args.datasets.split(","):
        ds = load_dataset(name, n_train=SIZES[name], n_test=args.n_test)
        for metric in args.metrics.split(","):
            M = None if metric == "euclidean" else make_learner(metric).fit(ds.X_train, ds.y_train).get_mahalanobis_matrix()
            for K in (int(k) for k in args.k.split(",")):
                rows.append(one_row(ds, name, metric, M, K, args))
                print("  done:", rows[-1][:3], f"{rows[-1][-1]:.0f} ms/pt", flush=True)
    print()
    print(table(["data (train x D)", "metric", "K", "correct", "certified", "exact", "attack", "cert==exact",
                 "attack==exact", "proven", "gap unproven", "median QPs", "ms/pt"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
