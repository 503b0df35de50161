"""Pairwise similarity attacks (AckMetric, ARML_NOTES section 8) on digits and usps.

1. Attack throughput: pairs per second of ``pair_attack`` (projected sign-gradient,
   coupled l_inf budget, three budget splits, box [0, 1]) on the CPU.
2. Success rates: attack success and the certified upper bound (pairs not certified)
   at two budgets for Euclidean, NCA, LMNN, ARML, the margin loss alone and the
   spectral defence. Pairs are drawn from the test split (clipped to [0, 1]: test
   pixels scaled with the training scaler can exceed 1), half similar, half dissimilar;
   success means the decision disagrees with the pair's label after the attack (so the
   rate at eps = 0 is the clean error). Baselines use gamma = the median distance of
   balanced training pairs under their metric; the margin-loss learners use the gamma
   they were trained for (2, as published).

    python benchmarks/bench_pairwise.py [--datasets digits,usps] [--eps 0.07,0.09]
        [--usps-train 1500] [--n-pairs 2000] [--steps 50] [--threads N] [--device cpu]

usps is read from $ARML_DATA_DIR, else ../shared/data, else data/, and skipped when absent.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from _common import data_dir, machine, table

METHODS = ("euclidean", "nca", "lmnn", "arml", "margin", "spectral")


def load(name: str, usps_train: int):
    from arml_core.data import list_datasets, load_dataset

    if name == "digits":
        return load_dataset("digits", seed=42), "full training split"
    d = data_dir()
    if d is None or not list_datasets(d).get(name):
        print(f"SKIPPED: data set {name!r} not found (set ARML_DATA_DIR or put ../shared/data beside the repo)\n")
        return None, ""
    ds = load_dataset(name, data_dir=d, n_train=usps_train, seed=42)
    return ds, f"stratified training subsample of {len(ds.X_train)} (seed 42)"


def learner_params(method: str) -> tuple[str, dict]:
    return {
        "euclidean": ("euclidean", {}),
        "nca": ("nca", {"max_iter": 100}),
        "lmnn": ("lmnn", {"max_iter": 50}),
        "arml": ("arml", {"n_epochs": 300}),
        "margin": ("spectral", {"penalty": 0.0}),
        "spectral": ("spectral", {}),
    }[method]


def throughput(ds, args) -> list:
    from arml_core.pairwise import pair_attack, sample_pairs

    X = np.clip(ds.X_test, 0.0, 1.0)
    half = args.n_pairs // 2
    i, j, yp = sample_pairs(X, ds.y_test, half, args.n_pairs - half, random_state=0)
    W = np.eye(ds.n_features)
    gamma = float(np.median(((X[i] - X[j]) ** 2).sum(1)))
    import torch

    rows = []
    current = torch.get_num_threads()
    for threads in sorted({1, args.default_threads}):
        torch.set_num_threads(threads)
        for steps in (20, args.steps):
            pair_attack(W, X[i[:50]], X[j[:50]], gamma, 0.07, steps=steps, y_pair=yp[:50], device=args.device)
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                pair_attack(W, X[i], X[j], gamma, 0.07, steps=steps, y_pair=yp, device=args.device)
                best = min(best, time.perf_counter() - t0)
            rows.append([ds.name, ds.n_features, len(i), steps, 3, threads, f"{best:.3f}", f"{len(i) / best:,.0f}"])
    torch.set_num_threads(current)
    return rows


def success_table(ds, args, eps_values) -> list:
    from arml_core.learners import make_learner
    from arml_core.metric import robust_error_curve as success_rate_curve
    from arml_core.pairwise import (certified_pair_radii, pair_attack_grid, pair_distances, sample_pairs,
                                    threshold_from_quantile)

    X = np.clip(ds.X_test, 0.0, 1.0)
    half = args.n_pairs // 2
    i, j, yp = sample_pairs(X, ds.y_test, half, args.n_pairs - half, random_state=0)
    rows = []
    for method in args.methods.split(","):
        name, params = learner_params(method)
        est = make_learner(name, **params)
        if "device" in est.get_params():
            est.set_params(device=args.device)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(ds.X_train, ds.y_train)
        fit_s = time.perf_counter() - t0
        W = np.asarray(est.components_, dtype=np.float64)
        if name == "spectral":
            gamma, rule = est.gamma_, "trained"
        else:
            gamma, rule = threshold_from_quantile(W, ds.X_train, ds.y_train, 0.5), "q0.5"
        t0 = time.perf_counter()
        grid = pair_attack_grid(W, X[i], X[j], gamma, [0.0, *eps_values], y_pair=yp, steps=args.steps,
                                device=args.device)
        att_s = time.perf_counter() - t0
        radii = certified_pair_radii(W, X[i], X[j], gamma, y_pair=yp)
        cert = success_rate_curve(radii, eps_values)
        attack = [grid.success_rate[np.searchsorted(grid.eps_grid, e)] for e in eps_values]
        lam = float(np.linalg.norm(W, 2) ** 2)
        clean = float(np.mean((pair_distances(W, X[i], X[j]) <= gamma) != (yp > 0)))
        label = {"margin": "margin loss (penalty 0)", "spectral": "spectral defence"}.get(method, method)
        rows.append([label, f"{fit_s:.1f}", f"{gamma:.4g} ({rule})", f"{100 * clean:.1f}"]
                    + [f"{100 * a:.1f}" for a in attack] + [f"{100 * c:.1f}" for c in cert]
                    + [f"{lam:.3g}", f"{att_s:.2f}"])
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="digits,usps")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--eps", default="0.07,0.09")
    p.add_argument("--usps-train", type=int, default=1500)
    p.add_argument("--n-pairs", type=int, default=2000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    import torch

    a.default_threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    eps_values = [float(e) for e in a.eps.split(",")]
    print(f"Pairwise similarity attack; {machine()}; device {a.device}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    loaded = []
    for name in a.datasets.split(","):
        ds, note = load(name, a.usps_train)
        if ds is not None:
            loaded.append((ds, note))

    rows = [r for ds, _ in loaded for r in throughput(ds, a)]
    if rows:
        print("Attack throughput (Euclidean metric, eps 0.07, splits 1/0.5/0 of eps on x_i, best of 3)\n")
        print(table(["data", "d", "pairs", "steps", "splits", "torch threads", "seconds", "pairs/s"], rows))
        print()

    heads = (["method", "fit s", "gamma", "clean err %"] + [f"attack eps={e:g} %" for e in eps_values]
             + [f"not certified eps={e:g} %" for e in eps_values] + ["lambda_max", "attack s"])
    for ds, note in loaded:
        print(f"{ds.name}: metrics fitted on the {note}; {a.n_pairs} test pairs (half similar), "
              f"{a.steps} steps; NCA max_iter 100, LMNN max_iter 50, ARML 300 epochs, "
              "margin/spectral 300 epochs\n")
        print(table(heads, success_table(ds, a, eps_values)))
        print()
    print("attack %: pairs whose decision disagrees with their label after the attack (clean errors "
          "included);\nnot certified %: pairs whose certified radius is <= eps, an upper bound on any attack.")


if __name__ == "__main__":
    main()
