"""Benchmark of the exact 1-NN minimal-perturbation solver on pendigits.

    .venv/bin/python benchmarks/bench_exact.py [--n-test 1000] [--n-ref 20] [--device auto]

Full pendigits training set (7494 points), the first ``--n-test`` points of the test split
shuffled with ``random_state=42`` (ARML protocol), min-max scaled with the training
scaler.  Two metrics: Euclidean (``M = I``) and a random full-rank PSD ``M`` normalised
to trace D.  For each, the fast solver runs on all points; the cvxpy/Clarabel reference
(every negative's QP) runs on the first ``--n-ref`` correctly classified points, giving
the maximum relative difference and the reference's time per point.  Prints a plain
text (markdown) table; writes no files.  Skips cleanly when the data are absent.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from arml_core.device import device_label  # noqa: E402
from arml_core.metric import metric_from_components  # noqa: E402
from arml_core.robustness.exact import minimal_perturbations, verify_perturbations  # noqa: E402

DATA_DIR = "/work/shared/data"


def load_pendigits(n_test: int):
    """((X_train, y_train, X_test, y_test), source) or None when the files are absent."""
    try:  # the project's loader, when it exists and works
        from arml_core.data import load_dataset  # type: ignore

        ds = load_dataset("pendigits", data_dir=DATA_DIR, n_test=n_test)
        return (ds.X_train, ds.y_train, ds.X_test, ds.y_test), "arml_core.data.load_dataset"
    except Exception as exc:  # not there yet, or failing: read the files directly
        print(f"(arml_core.data.load_dataset unavailable: {type(exc).__name__}: {exc}; "
              "reading the LIBSVM files directly)", file=sys.stderr)
    files = [os.path.join(DATA_DIR, "pendigits", "pendigits"), os.path.join(DATA_DIR, "pendigits", "pendigits.t")]
    if not all(os.path.exists(f) for f in files):
        return None
    from sklearn.datasets import load_svmlight_files
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.utils import shuffle

    X_tr, y_tr, X_te, y_te = load_svmlight_files(files, n_features=16)
    X_tr, X_te = X_tr.toarray(), X_te.toarray()
    scaler = MinMaxScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    X_te, y_te = shuffle(X_te, y_te, random_state=42)
    return (X_tr, y_tr, X_te[:n_test], y_te[:n_test]), "LIBSVM files read directly"


def random_metric(D: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((D, D))
    M = metric_from_components(G)
    return M * (D / np.trace(M))


def _ref_point(X_tr, y_tr, x, y, M):
    """cvxpy reference for one test point: (norm, seconds)."""
    t0 = time.perf_counter()
    norm, _ = minimal_perturbations(X_tr, y_tr, x[None, :], np.array([y]), M, solver="cvxpy")
    return float(norm[0]), time.perf_counter() - t0


def _reference(rows, X_tr, y_tr, X_te, y_te, n_ref, jobs):
    """Solve the first ``n_ref`` correctly classified points of every row with cvxpy (every
    negative's QP), optionally in ``jobs`` processes; per-point times are measured inside."""
    tasks = []
    for r, row in enumerate(rows):
        row["sub"] = np.flatnonzero(row["norms"] > 0)[:n_ref]
        row["ref"] = np.full(len(row["sub"]), np.nan)
        row["ref_s"] = np.zeros(len(row["sub"]))
        tasks += [(r, k, i) for k, i in enumerate(row["sub"])]
    t0 = time.perf_counter()

    def record(r, k, res, done):
        rows[r]["ref"][k], rows[r]["ref_s"][k] = res
        print(f"    cvxpy {done}/{len(tasks)}: {rows[r]['metric']} point {k}: {res[1]:.0f} s "
              f"(elapsed {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    if jobs <= 1:
        for done, (r, k, i) in enumerate(tasks, 1):
            record(r, k, _ref_point(X_tr, y_tr, X_te[i], y_te[i], rows[r]["M"]), done)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_ref_point, X_tr, y_tr, X_te[i], y_te[i], rows[r]["M"]): (r, k)
                    for r, k, i in tasks}
            for done, fut in enumerate(as_completed(futs), 1):
                record(*futs[fut], fut.result(), done)
    for row in rows:
        fast = row["norms"][row["sub"]]
        row.update(n_ref=len(row["sub"]), max_rel=float(np.max(np.abs(fast - row["ref"]) / row["ref"])),
                   ms_ref=1e3 * float(row["ref_s"].mean()))
        print(f"  reference done: {row['metric']}: max rel diff {row['max_rel']:.2e}, "
              f"{row['ms_ref'] / 1e3:.1f} s per point", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-ref", type=int, default=20, help="points checked against cvxpy (0: skip)")
    ap.add_argument("--ref-jobs", type=int, default=1,
                    help="worker processes for the cvxpy reference (its time is still per point)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    data = load_pendigits(args.n_test)
    if data is None:
        print(f"SKIP: pendigits files not found under {DATA_DIR}/pendigits/")
        return 0
    (X_tr, y_tr, X_te, y_te), source = data
    D = X_tr.shape[1]
    print(f"pendigits ({source}): {len(X_tr)} train, {len(X_te)} test, D={D}; device: {device_label(args.device)}")
    metrics = (("euclidean (M=I)", np.eye(D)), ("random PSD (tr M = D)", random_metric(D)))
    # warm-up (torch / BLAS initialisation is not part of the solver's cost)
    minimal_perturbations(X_tr, y_tr, X_te[:5], y_te[:5], np.eye(D), device=args.device)

    rows = []
    for name, M in metrics:  # all fast runs first, so the long reference runs cannot disturb them
        t0 = time.perf_counter()
        norms, deltas = minimal_perturbations(X_tr, y_tr, X_te, y_te, M, device=args.device)
        t_fast = time.perf_counter() - t0
        ok = verify_perturbations(X_tr, y_tr, X_te, y_te, M, norms, deltas, device=args.device)
        n_correct = int((norms > 0).sum())
        rows.append(dict(
            metric=name, M=M, norms=norms, n=len(X_te), clean_err=float((norms == 0).mean()),
            t_fast=t_fast, ms_pt=1e3 * t_fast / len(X_te), ms_pt_correct=1e3 * t_fast / max(1, n_correct),
            mean_r=float(norms.mean()), mean_r_correct=float(norms[norms > 0].mean()),
            verified=f"{int(ok.sum())}/{len(ok)}",
        ))
        print(f"  fast done: {name}: {t_fast:.2f} s", flush=True)
    if args.n_ref > 0:
        _reference(rows, X_tr, y_tr, X_te, y_te, args.n_ref, args.ref_jobs)

    print()
    print("| metric | n test | clean err | fast total (s) | fast ms/point | fast ms/correct point "
          "| mean radius (all) | mean radius (correct) | verified | ref points | max rel diff vs cvxpy "
          "| cvxpy ms/point | cvxpy / fast (per correct point) |")
    print("|" + "---|" * 13)
    for r in rows:
        ref_cols = ("| - | - | - | - |" if "n_ref" not in r else
                    f"| {r['n_ref']} | {r['max_rel']:.2e} | {r['ms_ref']:.0f} "
                    f"| {r['ms_ref'] / r['ms_pt_correct']:.0f}x |")
        print(f"| {r['metric']} | {r['n']} | {r['clean_err']:.3f} | {r['t_fast']:.2f} | {r['ms_pt']:.2f} "
              f"| {r['ms_pt_correct']:.2f} | {r['mean_r']:.4f} | {r['mean_r_correct']:.4f} | {r['verified']} "
              + ref_cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
