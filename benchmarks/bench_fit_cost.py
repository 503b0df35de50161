"""Fit-time cost model of the learners with the app's settings (``arml_core.limits.estimate_fit_seconds``).

    OMP_NUM_THREADS=1 nice python benchmarks/bench_fit_cost.py            # measure, fit, check, print
    python benchmarks/bench_fit_cost.py --methods lmnn,arml               # some methods

Each method is fitted once per size on a synthetic 3-class problem (``make_classification``,
min-max scaled like every data set here) on one core, with the app's settings (ARML:
300 epochs, learning rate 1e-2, 10 candidates, loss 'neg', CPU; the others metric-learn's
defaults through ``make_learner``). ``seconds = c0 + a * n**p * d**q + b * d**r`` (a per-run
overhead, the work per point, the work on d x d matrices) is fitted per method in log
space (scipy ``least_squares``, ``log(t + TAU)``) on the training sizes, then checked on the held-out
sizes, which must be within a factor of 3 (or 0.5 s for sub-second fits, see ``FACTOR``). The script prints the table, the held-out
ratios and the ``_FIT_COST`` dict that ``arml_core/limits.py`` holds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

METHODS = ("euclidean", "nca", "lmnn", "itml", "lfda", "arml")
APP_SETTINGS = {"arml": dict(n_epochs=300, learning_rate=1e-2, n_candidates=10, loss="neg", device="cpu")}
TRAIN_SIZES = [(50, 4), (50, 64), (50, 256), (50, 512), (200, 4), (200, 64), (200, 256), (800, 16), (30, 768)]
HELD_OUT = [(100, 128), (400, 32), (60, 384)]
#: LFDA refuses fewer points per class than features: its d-scaling is measured with more points.
#: NCA (n^2 per iteration) and ARML (the app's data sets have thousands of points) also at larger n.
EXTRA_TRAIN = {"lfda": [(300, 128), (600, 512), (900, 768)], "nca": [(1600, 16)],
               "arml": [(2000, 16), (3000, 64)]}
EXTRA_HELD_OUT = {"lfda": [(500, 384)], "nca": [(1200, 32)], "arml": [(1500, 32)]}
TAU = 0.05  # seconds: below this, differences do not count
#: A held-out fit passes within this factor of the model, or within ABSOLUTE_SLACK seconds: the
#: iteration counts of NCA and ITML (they stop on convergence) make sub-second fits vary 10x
#: with the data, which no size-only model predicts, and does not matter for a time estimate.
FACTOR, ABSOLUTE_SLACK = 3.0, 0.5


def problem(n: int, d: int, seed: int = 0):
    from sklearn.datasets import make_classification
    from sklearn.preprocessing import MinMaxScaler

    X, y = make_classification(n_samples=n, n_features=d, n_informative=max(2, d // 2), n_redundant=0,
                               n_classes=3, n_clusters_per_class=1, random_state=seed)
    return MinMaxScaler().fit_transform(X), y


def measure(method: str, n: int, d: int) -> float:
    """Seconds of one fit; NaN when the learner refuses the data (LFDA with fewer points than features)."""
    from arml_core.learners import make_learner

    X, y = problem(n, d)
    est = make_learner(method, **APP_SETTINGS.get(method, {}))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X, y)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            return float("nan")
    return time.perf_counter() - t0


def fit_model(sizes, seconds) -> tuple[float, ...]:
    """(c0, a, p, q, b, r) of ``c0 + a n^p d^q + b d^r`` minimising the squared error of
    ``log(t + TAU)``: relative error for fits of a second or more, absolute for the tiny ones."""
    from scipy.optimize import least_squares

    keep = ~np.isnan(seconds)
    n, d = np.log([s[0] for s in sizes])[keep], np.log([s[1] for s in sizes])[keep]
    t = np.log(np.asarray(seconds)[keep] + TAU)

    def residual(theta):
        log_c0, log_a, p, q, log_b, r = theta
        pred = np.exp(log_c0) + np.exp(log_a + p * n + q * d) + np.exp(log_b + r * d)
        return np.log(pred + TAU) - t

    best = None
    for start in ([-5, -8, 1, 0.5, -15, 2], [-2, -12, 2, 1, -20, 3], [-8, -5, 0.5, 0.2, -10, 1.5]):
        sol = least_squares(residual, start, bounds=([-14, -40, 0, 0, -60, 0], [6, 6, 3, 2.5, 6, 4]))
        if best is None or sol.cost < best.cost:
            best = sol
    log_c0, log_a, p, q, log_b, r = best.x
    return math.exp(log_c0), math.exp(log_a), float(p), float(q), math.exp(log_b), float(r)


def predict(model, n, d) -> float:
    c0, a, p, q, b, r = model
    return c0 + a * n**p * d**q + b * d**r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--save-json", default=None, help="write the measured seconds here")
    ap.add_argument("--from-json", default=None, help="reuse seconds measured before (only missing sizes are fitted)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    models, ok, raw = {}, True, {}
    if a.from_json:
        raw = json.loads(Path(a.from_json).read_text())
    print(f"{'method':10s} {'n':>5s} {'d':>5s} {'seconds':>9s} {'model':>9s} {'ratio':>6s}  set")
    for method in a.methods.split(","):
        train_sizes = TRAIN_SIZES + EXTRA_TRAIN.get(method, [])
        held_sizes = HELD_OUT + EXTRA_HELD_OUT.get(method, [])
        seen = raw.setdefault(method, {})  # "n x d" -> seconds; only what is missing is measured
        for n, d in train_sizes + held_sizes:
            if f"{n}x{d}" not in seen:
                seen[f"{n}x{d}"] = measure(method, n, d)
        train = [seen[f"{n}x{d}"] for n, d in train_sizes]
        held = [seen[f"{n}x{d}"] for n, d in held_sizes]
        model = fit_model(train_sizes, train)
        models[method] = model
        for sizes, secs, kind in ((train_sizes, train, "fit"), (held_sizes, held, "held out")):
            for (n, d), s in zip(sizes, secs):
                est = predict(model, n, d)
                ratio = max(est, 1e-4) / max(s, 1e-4)
                bad = (kind == "held out" and not (1 / FACTOR <= ratio <= FACTOR) and abs(est - s) > ABSOLUTE_SLACK
                       and not math.isnan(s))
                ok &= not bad
                print(f"{method:10s} {n:5d} {d:5d} {s:9.3f} {est:9.3f} {ratio:6.2f}  {kind}{'  OUT OF x3' if bad else ''}",
                      flush=True)
    print("\n_FIT_COST = {  # (c0, a, p, q, b, r): seconds = c0 + a * n**p * d**q + b * d**r")
    for m, theta in models.items():
        print(f'    "{m}": ({", ".join(f"{v:.3g}" for v in theta)}),')
    print("}")
    if a.save_json:
        Path(a.save_json).write_text(json.dumps(raw, indent=1))
    print(f"held-out sizes within a factor of {FACTOR:g} (or {ABSOLUTE_SLACK} s):", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
