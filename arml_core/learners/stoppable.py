"""A metric-learn fit that another thread can stop: ``fit_in_subprocess``.

The torch learners stop through their ``callback`` (returning False). metric-learn's
NCA, LMNN, ITML and LFDA run one long loop with no such hook, so this module runs the
fit in a child process (``multiprocessing``, forkserver where the platform has it, else
spawn) and ends that process when the caller's ``stop`` event is set or ``timeout``
passes, raising ``FitStopped``; the caller's process, its threads and its memory are
untouched. Nothing crosses as a pickle: the parameters go as JSON, the data and any array
parameter as ``.npy`` bytes (``allow_pickle=False``), both ways. metric-learn's own
verbose lines (its iteration count) are relayed as progress, else the time elapsed.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import numbers
import re
import sys
import threading
import time
import warnings

import numpy as np

from ._base import _TorchLearner, check_param

_KEYS = ("nca", "lmnn", "itml", "lfda")
_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "MemoryError": MemoryError,
           "LinAlgError": np.linalg.LinAlgError}
_PRELOADED = False


class FitStopped(RuntimeError):
    """A fit ended before it finished: its ``stop`` event was set (``reason == 'stop'``)
    or its ``timeout`` passed (``reason == 'timeout'``); ``elapsed`` in seconds."""

    def __init__(self, message: str, reason: str, elapsed: float):
        super().__init__(message)
        self.reason, self.elapsed = reason, elapsed


# -- the wire: JSON headers and .npy arrays ---------------------------------------------------
def _send_json(conn, obj) -> None:
    conn.send_bytes(json.dumps(obj).encode())


def _recv_json(conn):
    return json.loads(conn.recv_bytes().decode())


def _send_array(conn, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    conn.send_bytes(buf.getbuffer())


def _recv_array(conn) -> np.ndarray:
    return np.load(io.BytesIO(conn.recv_bytes()), allow_pickle=False)


_LINE_ITERATION = re.compile(r"^(?:\[\w+\]\s+)?(\d+)\s")  # NCA's "[NCA]  12 ...", LMNN's "12 ..."
_WORD_ITERATION = re.compile(r"\biter:\s*(\d+)")  # ITML's "itml iter: 12, conv = ..."


def _iteration(line: str) -> int | None:
    m = _LINE_ITERATION.match(line) or _WORD_ITERATION.search(line)
    return int(m.group(1)) if m else None


class _Relay(io.TextIOBase):
    """The child's stdout: each line of metric-learn's verbose output becomes a progress
    message (at most one per ``interval`` seconds; the last line is always sent)."""

    def __init__(self, conn, interval: float = 0.1):
        self.conn, self.interval = conn, interval
        self._buffer, self._pending, self._sent = "", None, 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self._pending = line.strip()
                if time.monotonic() - self._sent >= self.interval:
                    self.flush_pending()
        return len(text)

    def flush_pending(self) -> None:
        if self._pending is not None:
            _send_json(self.conn, {"kind": "progress", "iteration": _iteration(self._pending),
                                   "message": self._pending})
            self._pending, self._sent = None, time.monotonic()


def _child(inputs, outputs) -> None:
    """The child process: read the learner, its parameters and the data, fit, send back
    the fitted attributes (or the error)."""
    try:
        header = _recv_json(inputs)
        X, y = _recv_array(inputs), _recv_array(inputs)
        arrays = {name: _recv_array(inputs) for name in header["arrays"]}
        inputs.close()
        from .baselines import Euclidean, baseline_class

        cls = Euclidean if header["key"] == "euclidean" else baseline_class(header["key"])
        est = cls(**header["params"], **arrays)
        relay = None
        if header["progress"]:
            if "verbose" in header["params"]:
                est.set_params(verbose=True)
            relay = sys.stdout = _Relay(outputs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(X, y)
        if relay is not None:
            relay.flush_pending()
        seen = set()
        for w in caught:
            key = (w.category.__name__, str(w.message))
            if key not in seen:
                seen.add(key)
                _send_json(outputs, {"kind": "warning", "category": key[0], "message": key[1]})
        scalars, arrays_out = {}, {}
        for name, value in vars(est).items():
            if not name.endswith("_") or name.startswith("_"):
                continue
            if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
                arrays_out[name] = value
            elif isinstance(value, (bool, numbers.Number, str, type(None))) and not isinstance(value, complex):
                scalars[name] = value.item() if isinstance(value, np.generic) else value
        _send_json(outputs, {"kind": "done", "attrs": scalars, "arrays": list(arrays_out)})
        for value in arrays_out.values():
            _send_array(outputs, value)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
        _send_json(outputs, {"kind": "error", "type": type(exc).__name__, "message": str(exc)})
    finally:
        outputs.close()


# -- the caller's side -------------------------------------------------------------------------
def _context():
    """forkserver (its server imports this package and metric-learn once, so every later
    fit starts at once) where the platform has it, else spawn; never fork (the caller
    may hold threads and locks)."""
    global _PRELOADED
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if not _PRELOADED:
        ctx.set_forkserver_preload([__name__, "metric_learn"])
        _PRELOADED = True
    return ctx


def _learner_key(est) -> str:
    from .baselines import Euclidean, baseline_class

    if type(est) is Euclidean:
        return "euclidean"
    if isinstance(est, _TorchLearner):
        raise ValueError(f"{type(est).__name__} stops through its callback: return False from "
                         "callback(epoch, loss) to stop it, in this process.")
    for key in _KEYS:
        if type(est) is baseline_class(key):
            return key
    raise ValueError(f"fit_in_subprocess fits the learners of make_learner ('euclidean', {', '.join(map(repr, _KEYS))}), "
                     f"got a {type(est).__name__}.")


def _wire_params(est) -> tuple[dict, dict]:
    """(JSON parameters, array parameters) of ``est``; ValueError for anything else."""
    params, arrays = {}, {}
    for name, value in est.get_params(deep=False).items():
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (bool, str, numbers.Integral)):
            params[name] = value if not isinstance(value, numbers.Integral) or isinstance(value, bool) else int(value)
        elif isinstance(value, numbers.Real):
            params[name] = float(value)
        elif isinstance(value, (np.ndarray, list, tuple)) and np.asarray(value).dtype.kind in "biuf":
            arrays[name] = np.asarray(value)
        elif isinstance(value, np.random.RandomState):
            raise ValueError(f"{name} must be an integer or None to fit in another process (a RandomState "
                             "cannot be shared with it).")
        else:
            raise ValueError(f"{name}={value!r} cannot be passed to another process; give it as a number, "
                             "a string or an array of numbers.")
    return params, arrays


def _as_array(value, name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "biufUS":
        raise ValueError(f"{name} must be an array of numbers (or, for y, of labels), got dtype {a.dtype}.")
    return a


def _send_inputs(conn, header: dict, arrays: list) -> None:
    try:
        _send_json(conn, header)
        for a in arrays:
            _send_array(conn, a)
    except (BrokenPipeError, OSError):
        pass  # the child was ended first
    finally:
        conn.close()


def _died(name: str, proc) -> RuntimeError:
    return RuntimeError(f"the {name} fit process ended without a result (exit code {proc.exitcode}); it may have "
                        "run out of memory.")


def _end(proc) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
    proc.join(5.0)


def fit_in_subprocess(est, X, y, stop: threading.Event | None = None, *, timeout: float | None = None,
                      progress=None, poll_interval: float = 0.05):
    """Fit ``est`` (a learner of ``make_learner``: Euclidean, NCA, LMNN, ITML, LFDA) on
    ``X, y`` in a child process, and return ``est`` fitted as ``est.fit(X, y)`` would fit
    it (the same ``components_``, ``n_iter_`` and other fitted attributes; its warnings
    re-issued here).

    ``stop``: a ``threading.Event``; once set (from any thread) the child is ended
    within about ``poll_interval`` seconds and ``FitStopped`` is raised (``reason``
    'stop'); so it is after ``timeout`` seconds (``reason`` 'timeout'). ``progress``:
    ``progress(iteration, message)`` in the calling thread, with metric-learn's verbose
    line and the iteration it names (NCA, LMNN, ITML; ``verbose`` is switched on in the
    child for this), and ``(None, '<n> s elapsed')`` every second without one (LFDA has no
    verbose output). A learner's own ValueError comes back as a ValueError; a child that
    dies (out of memory) is a RuntimeError. The parameters must be numbers, strings, None
    or arrays; the torch learners stop through their callback instead (ValueError).

    As with every start method but fork, the child imports the caller's main module
    unless it was run with ``python -m``: a script that calls this at its top level needs
    the ``if __name__ == "__main__":`` guard (Streamlit's and pytest's entry points have it).
    """
    key = _learner_key(est)
    params, arrays = _wire_params(est)
    check_param(timeout, "timeout", "positive", allow_none=True)
    check_param(poll_interval, "poll_interval", "positive")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a function progress(iteration, message) or None, got {progress!r}")
    from .registry import display_name

    name = display_name(key)
    X, y = _as_array(X, "X"), _as_array(y, "y")
    ctx = _context()
    in_r, in_w = ctx.Pipe(duplex=False)
    out_r, out_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(in_r, out_w), name=f"arml-fit-{key}", daemon=True)
    proc.start()
    in_r.close()
    out_w.close()
    header = {"key": key, "params": params, "arrays": list(arrays), "progress": progress is not None}
    threading.Thread(target=_send_inputs, args=(in_w, header, [X, y, *arrays.values()]), daemon=True).start()
    start = last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                raise FitStopped(f"the {name} fit was stopped after {now - start:.1f} s.", "stop", now - start)
            if timeout is not None and now - start >= timeout:
                raise FitStopped(f"the {name} fit did not finish within {timeout:g} s and was stopped; allow more "
                                 "time or lower max_iter.", "timeout", now - start)
            if out_r.poll(poll_interval):
                try:
                    msg = _recv_json(out_r)
                    if msg["kind"] == "done":
                        fitted = {n: _recv_array(out_r) for n in msg["arrays"]}
                        break
                except EOFError:
                    proc.join(1.0)
                    raise _died(name, proc) from None
                if msg["kind"] == "progress" and progress is not None:
                    progress(msg["iteration"], msg["message"])
                    last = time.monotonic()
                elif msg["kind"] == "warning":
                    category = next((c for c in (UserWarning, RuntimeWarning, FutureWarning, DeprecationWarning)
                                     if c.__name__ == msg["category"]), UserWarning)
                    if msg["category"] == "ConvergenceWarning":
                        from sklearn.exceptions import ConvergenceWarning as category
                    warnings.warn(msg["message"], category, stacklevel=2)
                elif msg["kind"] == "error":
                    raise _ERRORS.get(msg["type"], RuntimeError)(msg["message"])
            elif not proc.is_alive() and not out_r.poll():
                proc.join()
                raise _died(name, proc)
            elif progress is not None and now - last >= 1.0:
                progress(None, f"{now - start:.0f} s elapsed")
                last = now
    finally:
        _end(proc)
        out_r.close()
    for attr, value in {**msg["attrs"], **fitted}.items():
        setattr(est, attr, value)
    return est
