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
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from arml_core.learners import ARML

    ds = load_or_skip("pendigits")
    print(f"pendigits: {len(ds.X_train)} train x {ds.n_features} features; {machine()}\n")
    rows = []
    for every in (1, 10):
        stamps, cpu = [], []
        est = ARML(n_epochs=a.epochs, resample_every=every, device=a.device, random_state=0,
                   callback=lambda e, l: (stamps.append(time.perf_counter()), cpu.append(time.process_time())))
        t0, c0 = time.perf_counter(), time.process_time()
        est.fit(ds.X_train, ds.y_train)
        total = time.perf_counter() - t0
        per = np.diff([c0] + cpu)  # CPU seconds of this process per epoch: robust to other load
        wall = np.diff([t0] + stamps)
        full, partial = est.n_neighbour_searches_
        rows.append([every, a.epochs, f"{total:.2f}", f"{wall.mean():.4f}", f"{per.mean():.4f}", f"{np.median(per):.4f}",
                     f"{per.max():.3f}", full, partial, f"{est.loss_curve_[0]:.4f}", f"{est.loss_curve_[-1]:.4f}"])
    print(table(["resample every", "epochs", "wall s", "wall s/epoch", "cpu s/epoch", "median cpu s/epoch",
                 "max cpu s/epoch",
                 "full searches", "partial searches", "first loss", "last loss"], rows))
    print("\ntarget: < 0.15 s per epoch with triplets re-drawn every epoch (resample every = 1)")


if __name__ == "__main__":
    main()
