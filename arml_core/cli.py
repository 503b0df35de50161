"""Command line: ``python -m arml_core {table,train,download,list,reproduce}``.

Progress goes to stderr, results to stdout (and to files with ``--out``).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import data
from .evaluation.evaluate import evaluate, fit_metric, parse_grid
from .learners import LEARNERS
from .limits import DEFAULT_LIMITS, Limits, get_limits
from .persistence import load_metric, save_metric


class _Progress:
    """A single self-overwriting status line on stderr (plain lines when not a TTY)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if fraction < 1.0 and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        line = f"[{stage}] {100 * fraction:5.1f}%  {message}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if fraction >= 1.0 else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def say(self, message: str) -> None:
        if not self.quiet:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()


def _parse_params(items: list[str]) -> dict[str, dict]:
    """``arml.n_epochs=200`` -> {'arml': {'n_epochs': 200}}."""
    out: dict[str, dict] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"--param expects METHOD.NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        method, name = key.split(".", 1)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method.lower(), {})[name] = parsed
    return out


def _limits(args) -> Limits:
    """The default limits, raised (or lowered) by --max-bytes/--max-points/--max-features/--max-entries."""
    return get_limits().with_(max_bytes=args.max_bytes, max_points=args.max_points,
                              max_features=args.max_features, max_dense_entries=args.max_entries)


def _load(args) -> data.Dataset:
    """A data set by name, or a user's CSV/LIBSVM file when --dataset is a path to one."""
    if Path(args.dataset).is_file():
        return data.load_file(args.dataset, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                              limits=_limits(args))
    return data.load_dataset(args.dataset, data_dir=args.data_dir, n_train=args.n_train,
                             n_test=args.n_test, seed=args.seed)


def _methods(text: str, n_features: int, limits: Limits | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Method names; an entry ending in .npz is a saved metric, named after its file."""
    names, metrics = [], {}
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        if token.endswith(".npz"):
            G, meta = load_metric(token, n_features=n_features, limits=limits)
            label = f"{meta.get('method', 'metric')}:{Path(token).stem}"
            names.append(label)
            metrics[label] = G
        elif token.lower() in LEARNERS:
            names.append(token.lower())
        else:
            raise ValueError(f"unknown method {token!r}; choose from {', '.join(LEARNERS)} or a .npz file")
    if not names:
        raise ValueError("no method given")
    return names, metrics


def cmd_table(args) -> int:
    prog = _Progress(args.quiet)
    ds = _load(args)
    data.validate_for_k(ds, args.k)
    prog.say(f"{ds.name}: {ds.description}")
    names, metrics = _methods(args.methods, ds.n_features, _limits(args))
    grid = parse_grid(args.grid)
    params = _parse_params(args.param)
    start = time.perf_counter()
    ev = evaluate(ds, names, args.k, grid, metrics=metrics, params=params, device=args.device,
                  box=(0.0, 1.0) if args.box else None, progress=prog, empirical=args.empirical)
    kind = "exact" if args.k == 1 else "certified"
    table = ev.paper_table()
    clean = {m: 100 * r.clean_error for m, r in ev.results.items()}
    print(f"{kind.capitalize()} robust error (%) of {args.k}-NN on {ds.name} "
          f"({len(ds.X_test)} test points), by l2 radius:")
    shown = table.copy()
    shown.insert(0, "clean", [round(clean[m], 1) for m in shown.index])
    if args.empirical:  # the paper's Table 2: certified block left, empirical block right
        emp = ev.paper_table(empirical=True)
        emp.columns = [f"{c} " for c in emp.columns]
        shown[" | "] = "|"
        shown = pd.concat([shown, emp], axis=1)
        print(f"(left: {kind}; right: empirical, {args.empirical} attack)")
    print(shown.to_string())
    print(f"total time {time.perf_counter() - start:.1f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tidy = ev.tidy()
        tidy.to_csv(out.with_suffix(".csv"), index=False)
        summary = {"dataset": ds.name, "description": ds.description, "K": args.k, "kind": kind,
                   "grid": list(map(float, grid)),
                   "empirical": args.empirical,
                   "methods": {m: {"clean_error": r.clean_error, "fit_time_s": r.fit_time,
                                   "eval_time_s": r.eval_time,
                                   "robust_error": dict(zip(map(float, grid), tidy[(tidy.method == m) & (
                                       tidy.kind == kind)].robust_error)),
                                   **({"empirical_robust_error": dict(zip(map(float, grid), tidy[
                                       (tidy.method == m) & tidy.kind.str.startswith("empirical")].robust_error)),
                                       "attack_time_s": r.attack_time} if args.empirical else {})}
                               for m, r in ev.results.items()}}
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        prog.say(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
    return 0


def cmd_train(args) -> int:
    prog = _Progress(args.quiet)
    ds = _load(args)
    params = _parse_params(args.param).get(args.method.lower(), {})
    G, seconds, info = fit_metric(ds, args.method, params=params, device=args.device, progress=prog)
    path = save_metric(args.out, G, dataset=ds.name, method=args.method.lower(), params=params,
                       seed=args.seed, fit_time=seconds,
                       extra={"description": ds.description, "info": {k: v for k, v in info.items() if k != "loss_curve"}})
    print(f"saved {path} ({G.shape[0]}x{G.shape[1]}, {seconds:.1f} s)")
    return 0


def cmd_download(args) -> int:
    names = data.FILE_DATASETS if args.dataset == "all" else [args.dataset]
    for name in names:
        def progress(done, total, filename):
            if not args.quiet:
                size = f"/{total / 1e6:.1f} MB" if total else ""
                sys.stderr.write(f"\r\033[K{filename}: {done / 1e6:.1f}{size}")
        paths = data.download(name, args.data_dir, mirror=args.mirror, overwrite=args.overwrite,
                              progress=progress)
        if not args.quiet:
            sys.stderr.write("\n")
        for p in paths:
            print(p)
    return 0


def cmd_list(args) -> int:
    for name, status in data.dataset_status(args.data_dir).items():
        print(f"{name:15s} {status}")
    return 0


def cmd_reproduce(args) -> int:
    from .device import resolve_device
    from .evaluation import reproduce as rp
    from .evaluation import summary

    prog = _Progress(args.quiet)

    def warn(message: str) -> None:  # shown even with --quiet
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    names = list(rp.PAPER_DATASETS) if args.datasets.strip().lower() == "all" else [
        d.strip().lower() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in rp.PAPER_DATASETS]
    if unknown or not names:
        raise ValueError(f"unknown data set(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(rp.PAPER_DATASETS)} or all")
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    profile = args.profile
    if profile == "auto":
        profile = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
    plans = {name: rp.make_plan(name, profile=profile, methods=methods, n_attack=args.n_attack, stages=stages,
                                defence=args.defence, pruning_radius=args.pruning_radius)
             for name in names}  # every argument is checked before anything runs
    available = data.list_datasets(args.data_dir)
    failed, done = [], []
    for name, plan in plans.items():
        if not available.get(name):
            warn(f"{name}: data missing in {data.resolve_data_dir(args.data_dir)} "
                 f"(python -m arml_core download {name}); skipped")
            failed.append(name)
            continue
        prog.say(f"== {name} (profile {profile}) ==")
        for d in plan.deviations():
            prog.say(f"   deviation: {d}")
        t0 = time.perf_counter()
        meta = rp.reproduce_dataset(name, plan, data_dir=args.data_dir, runs_dir=args.runs_dir,
                                    results_dir=args.results_dir, device=args.device, progress=prog)
        prog.say(f"{name}: done in {time.perf_counter() - t0:.1f} s")
        for f in meta["failures"]:
            warn(f"FAILED on {name}: {f}")
        for v in meta["violations"]:
            warn(f"SOUNDNESS VIOLATION on {name}: {v}")
        (failed if meta["violations"] or meta["failures"] else done).append(name)
    if done or any((Path(args.results_dir) / n / "metrics_meta.json").exists() for n in names):
        path = summary.write_summary(args.results_dir)
        print(f"wrote {path}")
    for name in done:
        res = summary.load_results(name, args.results_dir)
        for which in ("nn1", "certified", "empirical"):
            t = res.table(which)
            if t is not None:
                print(f"\n{name}: {which} robust error (%)\n{t.round(1).to_string()}")
        for m in res.extension_methods:  # beyond the paper's protocol
            p = res.meta["methods"][m].get("pruning", {})
            print(f"{name}: {m} (beyond the paper's protocol) kept {p.get('n_kept')} of {p.get('n_train')} "
                  f"training points at r = {p.get('radius')} ({p.get('solver')}, "
                  f"{'minimal' if p.get('exact') else 'not proven minimal'})")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m arml_core", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(q, *, n_test_default=None):
        q.add_argument("--dataset", required=True, help="a built-in or file data set name, or a CSV/LIBSVM file")
        q.add_argument("--data-dir", default=None, help="folder of the data sets (default: $ARML_DATA_DIR or data/)")
        q.add_argument("--n-train", type=int, default=None, help="subsample the training set")
        q.add_argument("--n-test", type=int, default=n_test_default, help="first N shuffled test points")
        q.add_argument("--seed", type=int, default=42)
        q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        q.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                       help="learner parameter, e.g. arml.n_epochs=200 (repeatable)")
        q.add_argument("--quiet", action="store_true", help="no progress on stderr")
        for flag, field in (("--max-bytes", "max_bytes"), ("--max-points", "max_points"),
                            ("--max-features", "max_features"), ("--max-entries", "max_dense_entries")):
            q.add_argument(flag, type=int, default=None, metavar="N",
                           help=f"limit of a user file or .npz metric (default {getattr(DEFAULT_LIMITS, field):,}; "
                                "arml_core.limits)")

    t = sub.add_parser("table", help="robust error table (exact for K=1, certified for K>1)")
    data_args(t, n_test_default=1000)
    t.add_argument("--methods", default="euclidean,arml",
                   help=f"comma-separated: {','.join(LEARNERS)} or saved .npz metrics")
    t.add_argument("--k", type=int, default=1, help="K of K-NN (odd)")
    t.add_argument("--grid", default="0,0.1,0.2,0.3,0.4,0.5", help="l2 radii, comma-separated")
    t.add_argument("--box", action="store_true", help="perturbations stay inside [0,1]^D")
    t.add_argument("--empirical", default=None, choices=["region", "boundary", "hopskipjump"],
                   help="also attack every test point: certified and empirical blocks side by side")
    t.add_argument("--out", default=None, help="write OUT.csv (tidy) and OUT.json")
    t.set_defaults(func=cmd_table)

    tr = sub.add_parser("train", help="learn a metric and save it (.npz + .json)")
    data_args(tr)
    tr.add_argument("--method", required=True, choices=list(LEARNERS))
    tr.add_argument("--out", required=True, help="output .npz path")
    tr.set_defaults(func=cmd_train)

    d = sub.add_parser("download", help="fetch a data set from its publisher (checksummed)")
    d.add_argument("dataset", choices=list(data.FILE_DATASETS) + ["all"])
    d.add_argument("--data-dir", default=None)
    d.add_argument("--mirror", default=None, help="base URL laid out as <mirror>/<name>/<file>")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)

    r = sub.add_parser("reproduce", help="the ARML paper's evaluation on its six data sets, cached and resumable")
    r.add_argument("--datasets", default="all", help="comma-separated paper data sets, or all")
    r.add_argument("--methods", default="euclidean,nca,lmnn,itml,lfda,arml")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--profile", default="auto", choices=["auto", "full", "gpu", "cpu"],
                   help="full: the paper's protocol; gpu: full data, NCA/LMNN/ITML fitted on subsamples; "
                        "cpu: also MNIST/Fashion-MNIST subsampled and fewer attacked points "
                        "(auto: gpu on CUDA, else cpu). Every deviation is stated in the results.")
    r.add_argument("--n-attack", type=int, default=None, help="attack only the first N test points")
    r.add_argument("--defence", default="none", choices=["none", "pruning"],
                   help="beyond the paper's protocol, stated so in the results: 'pruning' also evaluates every "
                        "method on its training set adversarially pruned at --pruning-radius (Yang et al. 2020), "
                        "rows '<method>+pruning'")
    r.add_argument("--pruning-radius", type=float, default=None,
                   help="l2 radius of --defence pruning (default: two grid steps, e.g. 0.2 on pendigits; "
                        "one on satimage, 0.15)")
    r.add_argument("--stages", default=",".join(("fit", "nn1", "knn11", "attack")),
                   help="fit,nn1,knn11,attack (without fit, only cached metrics are evaluated)")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--results-dir", default="results")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_reproduce)

    ls = sub.add_parser("list", help="which data sets are available")
    ls.add_argument("--data-dir", default=None)
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
