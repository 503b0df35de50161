"""Learned metrics on disk: one file format and the ``runs/`` cache built on it.

* :func:`save_metric` / :func:`load_metric`: ``<name>.npz`` (the components ``G`` and
  the metadata as JSON text, no pickles) with a readable ``<name>.json`` beside it;
  :func:`metric_to_bytes` for downloads. Every write is atomic (write beside, rename),
  and never replaces a ``.json`` that is not a metric's description. A file is read
  without trusting it: the ``.npy`` headers inside the zip are checked (dtype, shape,
  :class:`~arml_core.limits.Limits`) before any array is decompressed (:func:`read_npz`,
  :func:`load_npy`), nothing is unpickled.
* :func:`run_key`, :func:`cached_metric`, :func:`store_metric`: the cache of learned
  metrics under ``runs/`` (``$ARML_RUNS_DIR``), keyed by data set, method and fit
  settings, shared by the app, the CLI and ``reproduce``. A corrupt or stale file (or one
  whose metadata records another data set, method or settings) is reported with a
  warning and ignored, never raised.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import tempfile
import time
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .limits import Limits, get_limits
from .metric import check_components

FORMAT_VERSION = 1


def versions() -> dict:
    import sklearn
    import torch

    from . import __version__

    return {"arml_core": __version__, "numpy": np.__version__, "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_sidecar(path: Path) -> None:
    """Refuse to overwrite a ``.json`` that is not the description of a saved metric."""
    if not path.exists():
        return
    try:
        ours = path.stat().st_size < 10 * MAX_METADATA_CHARS and "format_version" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(f"saving would overwrite {path}, which is not a saved metric's description; "
                         "choose another file name or move that file")


def metric_to_bytes(components, metadata: dict) -> bytes:
    """An ``.npz`` holding the components and the metadata (as JSON text)."""
    if np.iscomplexobj(components):
        raise ValueError("the components are complex; a Mahalanobis metric is real: save its real components")
    buf = io.BytesIO()
    meta = {"format_version": FORMAT_VERSION, **metadata}
    np.savez(buf, components=np.asarray(components, dtype=np.float64),
             metadata=np.array(json.dumps(meta, default=str)))
    return buf.getvalue()


def save_metric(path, components, *, dataset: str, method: str, params: dict | None = None,
                seed: int | None = None, fit_time: float | None = None, extra: dict | None = None) -> Path:
    """Write ``path`` (.npz) and a readable ``.json`` beside it; returns the .npz path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    G = check_components(components)
    _check_sidecar(path.with_suffix(".json"))
    meta = {"dataset": dataset, "method": method, "params": params or {}, "seed": seed,
            "n_features": int(G.shape[1]), "n_components": int(G.shape[0]),
            "fit_time_s": fit_time, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(), **(extra or {})}
    _atomic_write(path, metric_to_bytes(G, meta))
    _atomic_write(path.with_suffix(".json"), json.dumps(
        {"format_version": FORMAT_VERSION, **meta}, indent=2, default=str).encode())
    return path


# --------------------------------------------------------------------------- #
# Reading .npz/.npy without trusting them: headers first, then only what passed
# --------------------------------------------------------------------------- #
#: Most members a metric .npz may hold (``save_metric`` writes two).
MAX_NPZ_MEMBERS = 16
#: Most characters of a metric's metadata (JSON text).
MAX_METADATA_CHARS = 1_000_000
class _Refused(ValueError):
    """A file read but refused (its headers): the message says why, no prefix needed."""


_LOAD_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError,
                NotImplementedError, RuntimeError)
LOAD_ERRORS = _LOAD_ERRORS  #: what reading a damaged or foreign ``.npz``/``.npy`` may raise (:func:`read_npz`)


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream ``fh``, read from its header alone."""
    version = npy_format.read_magic(fh)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fh)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


def _check_matrix_header(shape, dtype: np.dtype, what: str, limits: Limits, n_features: int | None) -> None:
    """A real 2-D numeric array within ``limits`` (feature count ``n_features`` if given)."""
    if dtype.kind == "c":
        raise _Refused(f"{what} are complex ({dtype}); a Mahalanobis metric is real: save its real components")
    if dtype.fields is not None or dtype.kind not in "fiu":
        raise _Refused(f"{what} have dtype {dtype}; they must be real numbers (float or integer)")
    if len(shape) != 2 or 0 in shape:
        raise _Refused(f"{what} must be a non-empty 2-D array, got shape {tuple(shape)}")
    if n_features is not None and shape[1] != n_features:
        raise _Refused(f"{what} are a metric for {shape[1]} features but the data have {n_features}")
    try:
        limits.check("max_features", shape[1], f"the number of features of {what}")
        limits.check("max_features", shape[0], f"the number of rows of {what}")
        limits.check("max_dense_entries", shape[0] * shape[1], f"the entries of {what}")
    except ValueError as exc:
        raise _Refused(str(exc)) from None


def _open_source(source, limits: Limits):
    """A binary file object for a path or a file object, its size checked first."""
    if isinstance(source, (str, os.PathLike)):
        size = os.stat(source).st_size
        fh = open(source, "rb")
    else:
        fh = source
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(0)
    limits.check("max_bytes", size, "the file's size in bytes")
    return fh, size


def _zip_members_count(fh, size: int) -> int:
    """The entry count of the zip's end-of-central-directory record (before zipfile reads the directory)."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    fh.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        is_npy = fh.read(6) == b"\x93NUMPY"
        fh.seek(0)
        raise ValueError("it is a .npy file, not an .npz" if is_npy else "not a zip archive (.npz), or truncated")
    return struct.unpack("<H", tail[at + 10:at + 12])[0]


def read_npz(source, members, *, limits: Limits | None = None,
             max_members: int = MAX_NPZ_MEMBERS) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (path or binary file object), each read only after its
    ``.npy`` header passed a check that raises ``ValueError``. ``members``: a dict
    ``name -> check(shape, dtype)`` (only those names; a missing one is left out), or one
    ``check(name, shape, dtype)`` for every member. Nothing is unpickled, and the file's
    size and member count (at most ``max_members``) are checked before the zip directory is
    read. A file that is not such an archive raises one of :data:`LOAD_ERRORS`."""
    limits = get_limits(limits)
    fh, size = _open_source(source, limits)
    try:
        if _zip_members_count(fh, size) > max_members:
            raise _Refused(f"the archive holds more than {max_members} members"
                           + (", so it is not a metric file (those hold two)" if max_members == MAX_NPZ_MEMBERS
                              else ""))
        out = {}
        with zipfile.ZipFile(fh) as z:
            names = z.namelist()
            if callable(members):
                wanted = [(n[:-4] if n.endswith(".npy") else n, n, members) for n in names]
            else:
                present = set(names)
                wanted = [(key, member, check) for key, check in members.items()
                          if (member := next((m for m in (f"{key}.npy", key) if m in present), None))]
            for key, member, check in wanted:
                with z.open(member) as f:
                    shape, _, dtype = _npy_header(f)
                check(key, shape, dtype) if callable(members) else check(shape, dtype)
                with z.open(member) as f:
                    out[key] = npy_format.read_array(f, allow_pickle=False)
        return out
    finally:
        if fh is not source:
            fh.close()


def load_npy(source, *, n_features: int | None = None, limits: Limits | None = None) -> np.ndarray:
    """A real 2-D matrix from an ``.npy`` (e.g. a metric ``M``), its header checked against
    ``limits`` before the data are read; nothing is unpickled. Anything else (a truncated or
    foreign file, one too large) raises ValueError with a readable message."""
    limits = get_limits(limits)
    name = getattr(source, "name", str(source))
    fh, _ = _open_source(source, limits)
    try:
        shape, _, dtype = _npy_header(fh)
        _check_matrix_header(shape, dtype, "the values in the .npy", limits, n_features)
        fh.seek(0)
        return npy_format.read_array(fh, allow_pickle=False)
    except _Refused:
        raise
    except _LOAD_ERRORS as exc:
        raise ValueError(f"{name} is not a readable .npy file: {str(exc)[:300]}") from None
    finally:
        if fh is not source:
            fh.close()


def load_metric(source, *, n_features: int | None = None, limits: Limits | None = None) -> tuple[np.ndarray, dict]:
    """Read a metric written by ``save_metric`` (a path or a binary file object).

    The ``.npy`` headers inside the zip are checked first (real numeric 2-D components, at
    most ``limits.max_features`` by ``limits.max_features`` and ``limits.max_dense_entries``
    entries; metadata a string of at most ``MAX_METADATA_CHARS``), so no array is
    decompressed before its size is known. Raises ValueError with a readable message for
    anything that is not such a file, whose feature count differs from ``n_features``,
    whose components are complex, not finite or outside the range of
    :func:`arml_core.metric.check_metric_scale`, or whose metadata is not a JSON object.
    """
    name = getattr(source, "name", str(source))
    limits = get_limits(limits)

    def components(shape, dtype):
        _check_matrix_header(shape, dtype, f"the components in {name}", limits, n_features)

    def metadata(shape, dtype):
        if dtype.kind not in "US" or tuple(shape) != () or dtype.itemsize // (4 if dtype.kind == "U" else 1) > \
                MAX_METADATA_CHARS:
            raise _Refused(f"the metadata in {name} must be a JSON text of at most {MAX_METADATA_CHARS:,} characters")
    try:
        arrays = read_npz(source, {"components": components, "metadata": metadata}, limits=limits)
        meta = json.loads(str(arrays["metadata"])) if "metadata" in arrays else {}
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except _LOAD_ERRORS as exc:
        raise ValueError(f"{name} is not a readable metric file (.npz): {str(exc)[:300]}") from None
    if "components" not in arrays:
        raise ValueError(f"{name} holds no 'components' array: not a metric saved by ARML Explorer")
    if not isinstance(meta, dict):
        raise ValueError(f"{name}: the metadata is {type(meta).__name__} JSON, not an object; not a metric saved "
                         "by ARML Explorer")
    G = check_components(arrays["components"], name=f"the components in {name}")
    return G, meta


def run_key(dataset: str, method: str, settings: dict) -> str:
    blob = json.dumps({"dataset": dataset, "method": method, **settings}, sort_keys=True, default=str)
    return f"{dataset}__{method}__{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _as_saved(value):
    """``value`` as it reads back from a metric file's metadata (JSON, unknown types as text)."""
    return json.loads(json.dumps(value, default=str))


def _stale_reason(meta: dict, dataset: str, method: str, settings: dict) -> str | None:
    """Why a cached run's metadata does not belong to its key (None: it does)."""
    if meta.get("format_version") != FORMAT_VERSION:
        return f"it records format_version {meta.get('format_version')!r}, not {FORMAT_VERSION}"
    fit_time = meta.get("fit_time_s")
    if fit_time is not None and not _is_seconds(fit_time):
        return f"its fit_time_s is {_short(fit_time)}, not a number of seconds"
    if not isinstance(meta.get("info", {}), dict):
        return f"its info is {type(meta['info']).__name__}, not an object"
    for field, expected in (("dataset", dataset), ("method", method), ("params", _as_saved(settings))):
        if meta.get(field) != expected:
            return f"it records {field} {_short(meta.get(field))}, not {expected!r}"
    return None


def _is_seconds(value) -> bool:
    """A finite, non-negative number (a JSON integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value >= 0
    except OverflowError:
        return False


def _short(value, n: int = 120) -> str:
    """``repr(value)``, cut to ``n`` characters (a message quotes a file, it does not reprint it)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts
        text = f"a {type(value).__name__} too large to print"
    return text if len(text) <= n else text[:n] + "..."


def cached_metric(runs_dir, dataset: str, method: str, settings: dict, n_features: int):
    """(components, metadata) of a saved run, or None. A corrupt or stale file (unreadable,
    of another feature count, metadata of the wrong types, or recording another data set,
    method or settings than its key) is reported with a warning and ignored, never raised,
    so the caller recomputes it."""
    path = Path(runs_dir) / (run_key(dataset, method, settings) + ".npz")
    if not path.exists():
        return None
    try:
        G, meta = load_metric(path, n_features=n_features)
        reason = _stale_reason(meta, dataset, method, settings)
        if reason:
            raise ValueError(reason)
    except ValueError as exc:
        warnings.warn(f"ignoring the saved run {path.name} (recomputing it): {exc}", stacklevel=2)
        return None
    return G, meta


def store_metric(runs_dir, dataset: str, method: str, settings: dict, components: np.ndarray,
                 fit_time: float, info: dict | None = None) -> Path:
    path = Path(runs_dir) / (run_key(dataset, method, settings) + ".npz")
    return save_metric(path, components, dataset=dataset, method=method, params=settings,
                       seed=settings.get("seed"), fit_time=fit_time, extra={"info": info or {}})
