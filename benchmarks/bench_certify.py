"""Certification speed, K = 11, pendigits (7494 train, first 1000 shuffled test points).

Three evaluations of the same bound, in the same run: 'naive' recomputes the pair
denominators for every test point, 'cached' computes them once per class, 'pruned'
(the default) adds the exact pruning of negatives. Answers must be identical. The
naive method runs on a prefix of the test points (it is slow); times are per point.

    python benchmarks/bench_certify.py [--n-naive 50] [--n-cached 200] [--device auto]
    python benchmarks/bench_certify.py --memory usps   # peak RSS of certification on usps
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import numpy as np
from _common import load_or_skip, machine, table, timed


def speed(args):
    from arml_core.certify import certified_radii
    from arml_core.learners import make_learner

    ds = load_or_skip("pendigits", n_test=1000)
    metrics = {"euclidean": np.eye(ds.n_features)}
    rng = np.random.default_rng(0)
    A = rng.normal(size=(ds.n_features, ds.n_features))
    metrics["random PSD"] = A.T @ A / np.trace(A.T @ A) * ds.n_features
    print(f"pendigits: {len(ds.X_train)} train, {len(ds.X_test)} test, K = 11; {machine()}\n")
    rows = []
    for name, M in metrics.items():
        call = lambda method, n: timed(certified_radii, ds.X_train, ds.y_train, ds.X_test[:n], ds.y_test[:n],
                                       M, 11, method=method, device=args.device)
        r_naive, t_naive = call("naive", args.n_naive)
        r_cached, t_cached = call("cached", args.n_cached)
        r_pruned, t_pruned = call("pruned", len(ds.X_test))
        same = (np.allclose(r_naive, r_pruned[: args.n_naive], rtol=1e-9, atol=1e-12)
                and np.allclose(r_cached, r_pruned[: args.n_cached], rtol=1e-9, atol=1e-12))
        per = [t_naive / args.n_naive, t_cached / args.n_cached, t_pruned / len(ds.X_test)]
        rows.append([name, f"{1e3 * per[0]:.2f}", f"{1e3 * per[1]:.2f}", f"{1e3 * per[2]:.3f}",
                     f"{per[0] / per[1]:.1f}x", f"{per[0] / per[2]:.1f}x", "yes" if same else "NO",
                     f"{np.mean(r_pruned):.4f}"])
    print(table(["metric", "naive ms/pt", "cached ms/pt", "pruned ms/pt", "cached vs naive",
                 "pruned vs naive", "identical", "mean radius"], rows))
    print(f"\n(naive on the first {args.n_naive} points, cached on the first {args.n_cached}, pruned on all)")


def memory(args):
    """Runs certification of `name` in a child process and reports its peak RSS."""
    code = f"""
import resource, sys, numpy as np
sys.path.insert(0, {str(__import__('_common').ROOT)!r})
from _common import load_or_skip
ds = load_or_skip({args.memory!r}, n_test={args.n_test})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from arml_core.certify import certified_radii
r = certified_radii(ds.X_train, ds.y_train, ds.X_test, ds.y_test, np.eye(ds.n_features), 11, device='cpu')
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{{len(ds.X_train)}} {{len(ds.X_test)}} {{base/1024:.0f}} {{peak/1024:.0f}} {{np.mean(r):.4f}}")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__('_common').ROOT / "benchmarks"))
    if out.returncode != 0 or "SKIPPED" in out.stdout:
        print(out.stdout + out.stderr)
        return
    n_tr, n_te, base, peak, mean_r = out.stdout.split()[-5:]
    print(table(["data set", "train", "test", "RSS after loading (MB)", "peak RSS (MB)", "mean radius"],
                [[args.memory, n_tr, n_te, base, peak, mean_r]]))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n-naive", type=int, default=50)
    p.add_argument("--n-cached", type=int, default=200)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--memory", default=None, help="a data set: report peak memory instead")
    a = p.parse_args()
    memory(a) if a.memory else speed(a)
