"""Shared helpers of the benchmarks: the paper's data, timing, plain-text tables."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"


def data_dir() -> Path | None:
    env = os.environ.get("ARML_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [SHARED, ROOT / "data"]:
        if cand.is_dir():
            return cand
    return None


def load_or_skip(name: str, **kw):
    from arml_core.data import list_datasets, load_dataset

    d = data_dir()
    if d is None or not list_datasets(d).get(name):
        print(f"SKIPPED: data set {name!r} not found (set ARML_DATA_DIR or put ../shared/data beside the repo)")
        raise SystemExit(0)
    return load_dataset(name, data_dir=d, **kw)


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def machine() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {dev}"
