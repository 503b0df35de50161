"""Fault inventory: bad inputs and faults across the library, the CLI and the app, each run in isolation.

    python benchmarks/fault_inventory.py                 # all cases, counts + every non-clear case
    python benchmarks/fault_inventory.py --surface cli   # one surface (prefix match: library, cli, app)
    python benchmarks/fault_inventory.py --json out.json --subprocess   # real `python -m arml_core`

Every case runs in a forked child (fresh state, an address-space limit of ``--memory-mb`` above
the parent's and a time limit) and is classified as

* ``clear error``: a ValueError/OSError with a readable message, the CLI exiting 2 with
  ``error:`` on stderr and no traceback, or the app showing the expected ``st.error``;
* ``handled``: a correct result (the case's check passes; a warning where one is due);
* ``traceback``: any other exception, or a Python traceback on stderr;
* ``silent failure``: a wrong or partial result (or a temporary file left behind) without a message;
* ``data lost``: a file that should have survived was changed or removed;
* ``exhausted``: over the memory or time guard (MemoryError, killed, timed out);
* ``unclear exit``: the CLI failed without the ``error:`` line;
* ``n/a``: the checkout has no such API (an older layout, ``--root``).

A case is a :class:`Case` in ``CASES``; each surface appends its own list (the app's, driven through
Streamlit's AppTest in the child, is ``_fault_cases_app.py``: an exception the app draws is a traceback). Run it
against another checkout with ``--root DIR`` (import paths of older layouts are tried in turn).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import io
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ARML_DATA_DIR", HERE.parents[1] / "shared" / "data"))
CLASSES = ("clear error", "handled", "traceback", "silent failure", "data lost", "exhausted", "unclear exit", "n/a")


@dataclass
class Case:
    """One fault. ``run(tmp)`` returns a result or raises; ``expect``: 'error' (a clear error is the
    only right answer), 'ok' (a correct result), 'either'; ``check(result, warnings)`` returns None when
    the result is right, else what is wrong; ``setup(tmp)`` runs before the guards; ``signal_ok``:
    dying of (or raising on) a signal is the expected end, judged by the left-overs alone."""

    surface: str
    name: str
    run: Callable[[Path], Any]
    expect: str = "error"
    check: Callable[[Any, list[str]], str | None] | None = None
    setup: Callable[[Path], None] | None = None
    timeout: float = 60.0
    signal_ok: bool = False


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def api(name: str):
    """``name`` from its home module here, else from an older layout's."""
    import importlib

    for mod in ("arml_core", "arml_core.data", "arml_core.persistence", "arml_core.io", "arml_core.runs",
                "arml_core.metric", "arml_core.limits", "arml_core.evaluation", "arml_core.evaluate",
                "arml_core.knn", "arml_core.robustness", "arml_core.learners"):
        try:
            obj = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if obj is not None:
            return obj

    def missing(*args, **kwargs):
        raise _Missing(f"{name} is in no known arml_core module of this checkout")
    return missing


class _Missing(Exception):
    """An API this checkout does not have: the case is 'n/a'."""


# ------------------------------------------------------------------------------ builders
def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def metric_npz(G, meta: dict | list | str | None = None) -> bytes:
    meta = {"format_version": 1, "dataset": "iris", "method": "arml", "params": {}} if meta is None else meta
    return npz(components=np.asarray(G), metadata=np.array(json.dumps(meta)))


def npz_bomb(shape=(12000, 12000), member="components", meta=True) -> bytes:
    """A small .npz whose member declares ``shape`` float64 zeros (deflated, written in chunks)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open(f"{member}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
            block = bytes(1 << 22)
            left = int(np.prod(shape)) * 8
            while left > 0:
                f.write(block[:min(left, len(block))])
                left -= len(block)
        if meta:
            z.writestr("metadata.npy", _npy_bytes(np.array(json.dumps({"method": "arml"}))))
    return buf.getvalue()


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def gz_bomb(line=b"0,1,0\n", n_bytes=300 << 20) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as g:
        chunk = line * ((1 << 20) // len(line))
        for _ in range(n_bytes // len(chunk)):
            g.write(chunk)
    return buf.getvalue()


def rows(n=12, d=2, sep=",", label=lambda i: "ab"[i % 2]) -> bytes:
    return "".join(sep.join([str((i * 7 + j) % 10) for j in range(d)] + [label(i)]) + "\n" for i in range(n)).encode()


def libsvm(n=12, extra: str = "") -> bytes:
    return ("".join(f"{i % 2} 1:{i} 2:{(i * 3) % 5}\n" for i in range(n)) + extra).encode()


def write(tmp: Path, rel: str, data: bytes) -> Path:
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def protect(tmp: Path, rel: str) -> None:
    """The file ``rel`` must be unchanged after the case."""
    import hashlib

    with open(tmp / ".protected", "a") as fh:
        fh.write(json.dumps([rel, hashlib.sha256((tmp / rel).read_bytes()).hexdigest()]) + "\n")


# ------------------------------------------------------------------------------ checks
def ds_check(n_features=None, n_rows=None, warn: str | None = None):
    def check(ds, warned):
        Xs = np.concatenate([ds.X_train, ds.X_test])
        if not np.all(np.isfinite(Xs)):
            return "non-finite features after loading"
        if ds.X_train.size and (ds.X_train.min() < -1e-9 or ds.X_train.max() > 1 + 1e-9):
            return f"training features outside [0, 1]: {ds.X_train.min()}..{ds.X_train.max()}"
        if n_features is not None and ds.n_features != n_features:
            return f"{ds.n_features} features, expected {n_features}"
        if n_rows is not None and ds.n_train + ds.n_test != n_rows:
            return f"{ds.n_train + ds.n_test} rows, expected {n_rows}"
        if warn and not any(warn in w for w in warned):
            return f"no warning mentioning {warn!r}"
        return None
    return check


def cli_ok(*needles: str):
    def check(r: CliResult, warned):
        if r.rc != 0:
            return f"exit {r.rc}: {r.err.strip().splitlines()[-1:] if r.err.strip() else ''}"
        missing = [n for n in needles if n not in r.out + r.err]
        return f"output lacks {missing}" if missing else None
    return check


# ------------------------------------------------------------------------------ servers
def serve(directory: Path, *, delay: float = 0.0, endless: set[str] = frozenset(), lie_length: int | None = None):
    """A local HTTP server for ``directory``; ``endless`` names stream forever, ``delay`` per 64 KiB."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            path = directory / self.path.lstrip("/")
            if name not in endless and not path.is_file():
                self.send_error(404)
                return
            data = b"" if name in endless else path.read_bytes()
            self.send_response(200)
            if name not in endless:
                self.send_header("Content-Length", str(lie_length or len(data)))
            self.end_headers()
            try:
                for i in range(0, 1 << 30, 1 << 16):  # "endless": 1 GiB at most
                    block = bytes(1 << 16) if name in endless else data[i:i + (1 << 16)]
                    if not block:
                        break
                    self.wfile.write(block)
                    time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_self_later(seconds: float, sig=signal.SIGTERM) -> None:
    threading.Timer(seconds, lambda: os.kill(os.getpid(), sig)).start()


# ------------------------------------------------------------------------------ the CLI
USE_SUBPROCESS = False
ROOT = HERE.parent


def run_cli(argv: list[str], tmp: Path, env: dict | None = None, timeout: float = 120) -> CliResult:
    os.environ.update(env or {})
    if USE_SUBPROCESS:
        import subprocess

        p = subprocess.run([sys.executable, "-m", "arml_core", *argv], cwd=tmp, capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return CliResult(p.returncode, p.stdout, p.stderr)
    from arml_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
        except BaseException:  # noqa: BLE001 - what `python -m arml_core` would print
            traceback.print_exc(file=err)
            rc = 1
    return CliResult(int(rc or 0), out.getvalue(), err.getvalue())


def cli(name, argv: str | list[str], expect="error", check=None, setup=None, env=None, timeout=120.0,
        signal_ok=False, kill_after: float | None = None) -> Case:
    def run(tmp):
        args = argv.split() if isinstance(argv, str) else list(argv)
        args = [a.replace("{tmp}", str(tmp)) for a in args]
        if kill_after:
            kill_self_later(kill_after)
        return run_cli(args, tmp, {"ARML_DATA_DIR": str(tmp / "data"), **(env or {})}, timeout)
    return Case("cli", name, run, expect, check, setup, timeout, signal_ok)


CASES: list[Case] = []  # filled from _fault_cases.py (the catalogue); a new surface appends its own list


# ------------------------------------------------------------------------------ the runner
def classify(case: Case, tmp: Path) -> tuple[str, str]:
    """Run ``case`` here (in the child) and classify what happened."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.run(tmp)
        except MemoryError as exc:
            return "exhausted", f"MemoryError {exc}"[:200]
        except _Missing as exc:
            return "n/a", str(exc)
        except (KeyboardInterrupt, SystemExit) as exc:
            if case.signal_ok:
                return "handled", f"terminated ({type(exc).__name__})"
            return "traceback", f"{type(exc).__name__}: {exc}"[:300]
        except (ValueError, OSError) as exc:
            msg = str(exc)
            if isinstance(exc, UnicodeError) or len(msg.split()) < 3 or len(msg) > 1500:
                return "traceback", f"{type(exc).__name__} (unreadable): {msg[:200]}"
            if case.expect == "ok":
                return "clear error", f"(valid input refused) {type(exc).__name__}: {msg[:240]}"
            return "clear error", f"{type(exc).__name__}: {msg[:240]}"
        except BaseException as exc:  # noqa: BLE001
            return "traceback", f"{type(exc).__name__}: {str(exc)[:240]}"
    warned = [str(w.message) for w in caught]
    if isinstance(result, CliResult):
        if "Traceback (most recent call last)" in result.err:
            return "traceback", result.err.strip().splitlines()[-1][:240]
        if result.rc == 2 and "error:" in result.err:
            last = [ln for ln in result.err.splitlines() if "error:" in ln][-1]
            if case.expect == "ok":
                return "clear error", f"(valid input refused) {last[:240]}"
            return "clear error", last[:240]
        if result.rc not in (0, 2):
            if case.signal_ok and result.rc in (130, 143, -15):
                return "handled", f"terminated (exit {result.rc})"
            return "unclear exit", f"exit {result.rc}: {result.err.strip()[-240:]}"
        if result.rc == 2:
            return "unclear exit", f"exit 2 without 'error:': {result.err.strip()[-240:]}"
    if case.expect == "error":
        return "silent failure", f"returned {summarise(result)} (warnings: {warned[:2]})"[:300]
    problem = case.check(result, warned) if case.check else None
    if problem:
        return "silent failure", problem[:300]
    return "handled", f"{summarise(result)}"[:200] + (f" (warned: {warned[0][:120]})" if warned else "")


def summarise(result) -> str:
    if isinstance(result, CliResult):
        return f"exit {result.rc}"
    if hasattr(result, "X_train"):
        return f"Dataset {result.n_train}+{result.n_test} x {result.n_features}"
    if isinstance(result, tuple) and result and isinstance(result[0], np.ndarray):
        return f"array {result[0].shape} {result[0].dtype}"
    if isinstance(result, np.ndarray):
        return f"array {result.shape} {result.dtype}"
    return repr(result)[:80]


def leftovers(tmp: Path) -> list[str]:
    return [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name.endswith((".part", ".tmp"))]


def lost(tmp: Path) -> list[str]:
    import hashlib

    out = []
    f = tmp / ".protected"
    for line in (f.read_text().splitlines() if f.exists() else []):
        rel, digest = json.loads(line)
        p = tmp / rel
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            out.append(rel)
    return out


def run_case(case: Case, memory_mb: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="fault_"))
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: guards, run, report through the pipe
        os.close(r)
        code = 0
        try:
            os.chdir(tmp)
            if case.setup:
                case.setup(tmp)
            vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (vm + memory_mb * 2**20, resource.RLIM_INFINITY))
            outcome = classify(case, tmp)
        except BaseException as exc:  # noqa: BLE001 - a broken setup is the harness's fault
            outcome = ("traceback", f"harness: {type(exc).__name__}: {exc}"[:300])
            code = 1
        os.write(w, json.dumps(outcome).encode())
        os._exit(code)
    os.close(w)
    deadline, status, usage = t0 + case.timeout, None, None
    while status is None:
        done, st, ru = os.wait4(pid, os.WNOHANG)
        if done:
            status, usage = st, ru
        elif time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if status == "timeout":
        cls, detail = "exhausted", f"over the {case.timeout:.0f} s time guard"
    elif data:
        cls, detail = json.loads(data)
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        cls = "handled" if case.signal_ok else ("exhausted" if sig == signal.SIGKILL else "traceback")
        detail = f"killed by signal {sig}"
    else:
        cls, detail = "traceback", f"child exited {os.waitstatus_to_exitcode(status)} without a report"
    if (gone := lost(tmp)):
        cls, detail = "data lost", f"changed or removed: {gone}"
    elif cls in ("clear error", "handled") and (left := leftovers(tmp)):
        cls, detail = "silent failure", f"left behind: {left}"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {"surface": case.surface, "name": case.name, "class": cls, "detail": detail,
            "seconds": round(time.perf_counter() - t0, 2), "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    global USE_SUBPROCESS, ROOT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surface", default="", help="only cases whose surface starts with this")
    p.add_argument("--grep", default="", help="only cases whose name contains this")
    p.add_argument("--memory-mb", type=int, default=1024, help="address space a case may add (MiB)")
    p.add_argument("--json", default=None, help="write every outcome here")
    p.add_argument("--subprocess", action="store_true", help="CLI cases as real `python -m arml_core`")
    p.add_argument("--root", default=None, help="the checkout to test (default: the cwd if it holds "
                   "arml_core, else this script's repository)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    a = p.parse_args(argv)
    ROOT = Path(a.root) if a.root else (Path.cwd() if (Path.cwd() / "arml_core").is_dir() else HERE.parent)
    sys.path.insert(0, str(ROOT))
    USE_SUBPROCESS = a.subprocess
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # pyarrow's own pool reserves GBs of address space
    import arml_core.cli  # noqa: F401  - import once in the parent: every fork starts warm
    import torch

    torch.set_num_threads(1)
    sys.modules.setdefault("fault_inventory", sys.modules[__name__])  # one copy of Case for the catalogue
    sys.path.insert(0, str(HERE))
    from _fault_cases import cli_cases, library_cases

    CASES.extend(library_cases() + cli_cases())
    if "app".startswith(a.surface) or a.surface.startswith("app"):  # the app surface (AppTest in the child)
        try:
            from _fault_cases_app import app_cases, warm
        except ImportError as exc:  # an older checkout without the app's modules
            print(f"app cases skipped: {exc}", file=sys.stderr)
        else:
            CASES.extend(app_cases())
    cases = [c for c in CASES if c.surface.startswith(a.surface) and a.grep in c.name]
    if any(c.surface == "app" for c in cases) and not a.list:
        warm()  # import streamlit and the app once in the parent: every fork starts warm
    if a.list:
        for c in cases:
            print(f"{c.surface:22s} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    print(f"{len(cases)} cases against {ROOT.resolve()}", file=sys.stderr)
    results = []
    for i, case in enumerate(cases, 1):
        res = run_case(case, a.memory_mb)
        results.append(res)
        print(f"[{i}/{len(cases)}] {res['class']:14s} {case.surface}: {case.name} ({res['seconds']} s, "
              f"{res['max_rss_mb']} MB)", file=sys.stderr)
    by_class = Counter(r["class"] for r in results)
    print(f"\n{len(results)} cases")
    print("by class:   " + ", ".join(f"{c} {by_class[c]}" for c in CLASSES if by_class[c]))
    surfaces = sorted({r["surface"] for r in results})
    print(f"{'surface':20s} " + " ".join(f"{c[:14]:>14s}" for c in CLASSES))
    for s in surfaces:
        cnt = Counter(r["class"] for r in results if r["surface"] == s)
        print(f"{s:20s} " + " ".join(f"{cnt[c]:14d}" for c in CLASSES))
    bad = [r for r in results if r["class"] not in ("clear error", "handled", "n/a")]
    print(f"\nnot clear ({len(bad)}):")
    for r in bad:
        print(f"  [{r['class']}] {r['surface']}: {r['name']}: {r['detail']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
