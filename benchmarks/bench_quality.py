"""Quality on pendigits with the paper's protocol: the 1-NN exact robust error table.

Full training set (7494), first 1000 shuffled test points (seed 42), every learner with
its defaults and a fixed random state (ARML: the published defaults, 1000 epochs).
Learned metrics are cached under runs/ (keyed by data set, method and settings), so a
rerun only fits what is missing.

    python benchmarks/bench_quality.py [--methods euclidean,nca,lmnn,itml,lfda,arml] [--k 1]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import ROOT, load_or_skip, machine, table


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="euclidean,nca,lmnn,itml,lfda,arml")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--grid", default="0,0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"))
    a = p.parse_args()
    from arml_core.evaluation import clean_error, fit_metric, parse_grid, radii_for
    from arml_core.metric import metric_from_components, robust_error_curve
    from arml_core.persistence import cached_metric, store_metric

    ds = load_or_skip("pendigits", n_test=1000)
    grid = parse_grid(a.grid)
    print(f"pendigits: {len(ds.X_train)} train, {len(ds.X_test)} test (paper protocol); K = {a.k}; {machine()}\n")
    rows, curves = [], {}
    for method in a.methods.split(","):
        settings = {"protocol": "paper", "n_train": 0, "seed": 42}
        hit = cached_metric(a.runs_dir, ds.name, method, settings, ds.n_features)
        if hit is None:
            print(f"fitting {method} ...", file=sys.stderr, flush=True)
            G, fit_s, info = fit_metric(ds, method, device=a.device)
            store_metric(a.runs_dir, ds.name, method, settings, G, fit_s,
                         {k: v for k, v in info.items() if k != "loss_curve"})
        else:
            G, meta = hit
            fit_s = float(meta.get("fit_time_s") or 0)
        M = metric_from_components(G)
        t0 = time.perf_counter()
        radii, kind = radii_for(ds, M, a.k, device=a.device)
        ev_s = time.perf_counter() - t0
        clean = clean_error(ds, M, a.k, device=a.device)
        curves[method] = robust_error_curve(radii, grid)
        rows.append([method, f"{100 * clean:.1f}"] + [f"{100 * v:.1f}" for v in curves[method]]
                    + [f"{fit_s:.1f}", f"{ev_s:.1f}"])
    print(table(["method", "clean %"] + [f"r={g:g}" for g in grid] + ["fit s", "radii s"], rows))
    print(f"\n({kind} robust error in %, {len(ds.X_test)} test points)")
    if "arml" in curves and "euclidean" in curves:
        ok = np.all(curves["arml"] <= curves["euclidean"] + 1e-12)
        print(f"ARML at or below Euclidean at every radius: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
