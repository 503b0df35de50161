"""ARML training speed on pendigits: seconds per epoch with triplets re-drawn every epoch.

    python benchmarks/bench_arml.py [--epochs 200] [--device auto]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import load_or_skip, machine, table


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    from arml_core.learners import ARML

    ds = load_or_skip("pendigits")
    print(f"pendigits: {len(ds.X_train)} train x {ds.n_features} features; {machine()}\n")
    rows = []
    for every in (1, 10):
        stamps = []
        est = ARML(n_epochs=a.epochs, resample_every=every, device=a.device, random_state=0,
                   callback=lambda e, l: stamps.append(time.perf_counter()))
        t0 = time.perf_counter()
        est.fit(ds.X_train, ds.y_train)
        total = time.perf_counter() - t0
        per = np.diff([t0] + stamps)
        full, partial = est.n_neighbour_searches_
        rows.append([every, a.epochs, f"{total:.2f}", f"{per.mean():.4f}", f"{np.median(per):.4f}",
                     f"{per.max():.3f}", full, partial, f"{est.loss_curve_[0]:.4f}", f"{est.loss_curve_[-1]:.4f}"])
    print(table(["resample every", "epochs", "total s", "mean s/epoch", "median s/epoch", "max s/epoch",
                 "full searches", "partial searches", "first loss", "last loss"], rows))
    print("\ntarget: < 0.15 s per epoch with triplets re-drawn every epoch (resample every = 1)")


if __name__ == "__main__":
    main()
