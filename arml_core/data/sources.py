"""Where the data sets come from: their names, the publishers' files, the data folder.

The registry of every data set name (:data:`BUILTIN_DATASETS`, :data:`FILE_DATASETS`,
:data:`IMAGE_SHAPES`) and, for the file data sets, the publishers' file names, URLs and
checksums. A file data set lives under ``<data folder>/<name>/`` with the publishers'
file names (:func:`resolve_data_dir`: the ``data_dir`` argument, ``$ARML_DATA_DIR`` or
``./data``); :func:`list_datasets` and :func:`available_datasets` say what is present,
:func:`download` fetches and verifies the files. Nothing here parses a file
(``readers``) or preprocesses one (``prepare``).

See ``ARML_NOTES.md`` sections 1 and 9 for the data sets of the paper.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]

BUILTIN_DATASETS: tuple[str, ...] = (
    "figure1",
    "moons",
    "circles",
    "blobs",
    "iris",
    "wine",
    "breast_cancer",
    "digits",
)
FILE_DATASETS: tuple[str, ...] = (
    "splice",
    "pendigits",
    "satimage",
    "usps",
    "mnist",
    "fashion-mnist",
)
IMAGE_SHAPES: dict[str, tuple[int, int]] = {
    "digits": (8, 8),
    "usps": (16, 16),
    "mnist": (28, 28),
    "fashion-mnist": (28, 28),
}

_ENV_VAR = "ARML_DATA_DIR"

# --------------------------------------------------------------------------- #
# Registry of the file data sets
# --------------------------------------------------------------------------- #
_LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class _RemoteFile:
    filename: str
    url: str
    algorithm: str | None  # "sha256", "md5" or None (no known checksum)
    digest: str | None
    size: int | None = None  # bytes of the published file (None: unknown)


def _published(base: str, files: Sequence[str], checks: Sequence[str | None],
               sizes: Sequence[int | None]) -> tuple[_RemoteFile, ...]:
    """The files ``<base>/<file>``, each with its ``"algorithm:digest"`` (None: no known checksum)
    and its size in bytes (None: unknown)."""
    return tuple(
        _RemoteFile(f, f"{base}/{f}", *(check.split(":") if check else (None, None)), size)
        for f, check, size in zip(files, checks, sizes, strict=True)
    )


#: Most bytes :func:`download` accepts for a file whose size is not in the registry.
UNKNOWN_SIZE_CAP = 64 * 2**20


# Checksums and sizes: the publisher's exact bytes (MANIFEST.md of the shared data, and
# its "Missing" section for the official usps.bz2). The official MNIST train-images
# .gz is only known by md5 (and its published size, 9,912,422 bytes). LIBSVM splice.t
# has no known checksum or size: it is capped at UNKNOWN_SIZE_CAP.
_REMOTE: dict[str, tuple[_RemoteFile, ...]] = {
    "splice": _published(f"{_LIBSVM_URL}/binary", ("splice", "splice.t"), (
        "sha256:eee33566cfe8988ec26122460cc712d66c5c5b79b966b259408e803addaa584d", None), (715000, None)),
    "pendigits": _published(f"{_LIBSVM_URL}/multiclass", ("pendigits", "pendigits.t"), (
        "sha256:f3823d204ed5a3e9088267b4e141aac32503b8f2eb18c3469ad1212235db5ee6",
        "sha256:8a5f65e742447d6b6d77d4e0cf70714f75d2801966ebfe492d7ffaf24acd9d9f"), (589456, 274928)),
    "satimage": _published(f"{_LIBSVM_URL}/multiclass", ("satimage.scale", "satimage.scale.t"), (
        "sha256:df08755887b968a272b84247fa0b1543b8cd623442fbc1c7943144e459ef2eb6",
        "sha256:da3fb85baadd087beb9e8b32931224c443e26dc3305c09396170ab8997aedf92"), (1880204, 847958)),
    "usps": _published(f"{_LIBSVM_URL}/multiclass", ("usps.bz2", "usps.t.bz2"), (
        "sha256:3771e9dd6ba685185f89867b6e249233dd74652389f263963b3b741e994b034f",
        "sha256:a9c0164e797d60142a50604917f0baa604f326e9a689698763793fa5d12ffc4e"), (6579383, 1831726)),
    "mnist": _published(_MNIST_URL, _IDX_FILES, (
        "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"), (9912422, 28881, 1648877, 4542)),
    "fashion-mnist": _published(_FASHION_URL, _IDX_FILES, (
        "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "sha256:a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "sha256:67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"), (26421880, 29515, 4422102, 5148)),
}

# (train file, test file, n_features) of the LIBSVM data sets; ".bz2" variants accepted.
_LIBSVM_FILES: dict[str, tuple[str, str, int]] = {
    "splice": ("splice", "splice.t", 60),
    "pendigits": ("pendigits", "pendigits.t", 16),
    "satimage": ("satimage.scale", "satimage.scale.t", 36),
    "usps": ("usps", "usps.t", 256),
}

_SOURCES: dict[str, str] = {
    "splice": "LIBSVM binary data set 'splice' (DELVE splice-junction sequences)",
    "pendigits": "LIBSVM multiclass data set 'pendigits' (UCI pen-based handwritten digits)",
    "satimage": "LIBSVM multiclass data set 'satimage.scale' (UCI Statlog Landsat satellite)",
    "usps": "LIBSVM multiclass data set 'usps' (USPS handwritten digits, 16x16 pixels)",
    "mnist": "MNIST handwritten digits (LeCun et al.), IDX files, 28x28 pixels",
    "fashion-mnist": "Fashion-MNIST (Zalando Research), IDX files, 28x28 pixels",
}

# Known non-official copies (see the shared data's MANIFEST.md): sha256 -> note.
_KNOWN_VARIANTS: dict[str, dict[str, str]] = {
    "splice": {
        "a231d01d702c4fcbb6b66bccefef030ab56154ae4a589d871154fea5b7689b36":
            "The test file is a reconstruction of LIBSVM splice.t (same rows, original order "
            "unknown), so the first test points after shuffling differ from the paper's.",
    },
    "usps": {
        "293a5e48b5b735a4bae5f6178f390831bf00e0cbd6e1616862a56d8411eac418":
            "The training file is a reconstruction of LIBSVM usps from an 8-bit copy "
            "(pixels within 1/255 of the original after scaling).",
    },
}


# --------------------------------------------------------------------------- #
# Locating files
# --------------------------------------------------------------------------- #
def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The data folder in use: ``data_dir``, else ``$ARML_DATA_DIR``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("data")


def _normalize_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, got {name!r}")
    key = name.strip().lower()
    if key in ("fashion_mnist", "fashionmnist"):
        return "fashion-mnist"
    if key in ("breast-cancer", "breastcancer"):
        return "breast_cancer"
    return key


def _candidates(name: str, data_dir: Path) -> list[list[Path]]:
    """For each required file, the paths accepted for it (first existing wins)."""
    folder = data_dir / name
    if name in _LIBSVM_FILES:
        train, test, _ = _LIBSVM_FILES[name]
        return [[folder / train, folder / f"{train}.bz2"], [folder / test, folder / f"{test}.bz2"]]
    return [[folder / f, folder / f[: -len(".gz")]] for f in _IDX_FILES]


def _find_files(name: str, data_dir: Path) -> tuple[list[Path] | None, list[Path]]:
    """(found paths or None if any is missing, every path looked for)."""
    found: list[Path] = []
    looked: list[Path] = []
    complete = True
    for options in _candidates(name, data_dir):
        looked.extend(options)
        hit = next((p for p in options if p.is_file()), None)
        if hit is None:
            complete = False
        else:
            found.append(hit)
    return (found if complete else None), looked


def _missing_files_error(name: str, data_dir: Path, looked: Sequence[Path]) -> FileNotFoundError:
    paths = "\n  ".join(str(p) for p in looked)
    return FileNotFoundError(
        f"data set {name!r} needs files that are not in the data folder {str(data_dir)!r} "
        f"(resolved: {data_dir.resolve()}). Looked for (one of each pair):\n  {paths}\n"
        f"Fetch them with `python -m arml_core download {name}`, or point the environment "
        f"variable {_ENV_VAR} (or the data_dir argument) at a folder holding {name}/."
    )


def list_datasets(data_dir: PathLike | None = None) -> dict[str, bool]:
    """Every known data set name mapped to whether it can be loaded now.

    Built-ins are always available; a file data set is available when all its
    files are present under ``data_dir`` (see :func:`resolve_data_dir`).
    :func:`dataset_status` says the same in words, and which present files cannot be
    verified (no published checksum).
    """
    folder = resolve_data_dir(data_dir)
    out = {name: True for name in BUILTIN_DATASETS}
    for name in FILE_DATASETS:
        out[name] = _find_files(name, folder)[0] is not None
    return out


def dataset_status(data_dir: PathLike | None = None) -> dict[str, str]:
    """Every known data set name mapped to a readable status: ``"available"``,
    ``"available (unverified: no published checksum for splice.t)"`` when a present file
    has no published checksum to verify it against, or ``"missing (...)"`` saying how to
    fetch it. What :func:`list_datasets` says as a bool, in words."""
    folder = resolve_data_dir(data_dir)
    out = {name: "available" for name in BUILTIN_DATASETS}
    for name in FILE_DATASETS:
        found = _find_files(name, folder)[0]
        if found is None:
            out[name] = f"missing (python -m arml_core download {name})"
            continue
        unverified = [p.name for p in found
                      if any(r.algorithm is None and p.name in (r.filename, r.filename.removesuffix(".bz2"),
                                                                  r.filename.removesuffix(".gz"))
                             for r in _REMOTE.get(name, ()))]
        out[name] = (f"available (unverified: no published checksum for {', '.join(unverified)})"
                     if unverified else "available")
    return out


def available_datasets(data_dir: PathLike | None = None) -> list[str]:
    """Names of the data sets that can be loaded now (built-ins first)."""
    return [name for name, ok in list_datasets(data_dir).items() if ok]


# --------------------------------------------------------------------------- #
# Download
# --------------------------------------------------------------------------- #
_CHUNK = 1 << 16


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(
    name: str,
    data_dir: PathLike | None = None,
    *,
    mirror: str | None = None,
    overwrite: bool = False,
    timeout: float = 60,
    progress: Callable[[int, int | None, str], None] | None = None,
) -> list[Path]:
    """Fetch and verify the official files of a file data set into ``data_dir/name/``.

    Each file is streamed to a temporary file in the target folder, its
    checksum checked, and only then moved into place with ``os.replace``; on
    any failure or interruption (an exception, KeyboardInterrupt, SIGTERM: in the
    main thread a temporary handler turns it into ``SystemExit(143)``) the
    temporary file is removed and an existing file is left untouched. The stream
    is cut off past the published file's size (from the registry; for a file of
    unknown size, :data:`UNKNOWN_SIZE_CAP`), and a larger announced size is
    refused before reading. A file already present whose checksum matches is skipped (no
    request) unless ``overwrite``; a present file that does not match is
    fetched again. ``splice.t`` has no published checksum: it is downloaded
    (or kept when present) and a ``UserWarning`` gives its sha256.

    Parameters
    ----------
    mirror
        Base URL under which the files live at ``<mirror>/<name>/<filename>``
        (the layout of the data folder); default: the publishers' URLs.
    progress
        ``progress(done_bytes, total_bytes_or_None, filename)`` after each chunk.

    Returns the paths of all the data set's files.

    Raises ``ValueError`` for an unknown name or a checksum mismatch (naming
    the file, expected and actual digests) and ``OSError`` for network errors.
    """
    key = _normalize_name(name)
    if key not in _REMOTE:
        raise ValueError(
            f"cannot download {name!r}: downloadable data sets are {', '.join(FILE_DATASETS)} "
            f"(built-ins {', '.join(BUILTIN_DATASETS)} need no files)"
        )
    folder = resolve_data_dir(data_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for remote in _REMOTE[key]:
        target = folder / remote.filename
        paths.append(target)
        if target.is_file() and not overwrite:
            if remote.algorithm is None:
                continue  # nothing to verify against; keep the present copy
            if _file_digest(target, remote.algorithm) == remote.digest:
                continue
        url = f"{mirror.rstrip('/')}/{key}/{remote.filename}" if mirror else remote.url
        actual = _fetch_verified(url, target, remote, timeout=timeout, progress=progress)
        if remote.algorithm is None:
            warnings.warn(
                f"{target.name} for {key!r} was downloaded from {url} but could not be verified: "
                f"no official checksum is known. Its sha256 is {actual}.",
                UserWarning,
                stacklevel=2,
            )
    return paths


def _fetch_verified(
    url: str,
    target: Path,
    remote: _RemoteFile,
    *,
    timeout: float,
    progress: Callable[[int, int | None, str], None] | None,
) -> str:
    """Download ``url`` to ``target`` atomically; return the hex digest used to verify it.

    When ``remote`` has no checksum the returned digest is the file's sha256.
    """
    algorithm = remote.algorithm or "sha256"
    hasher = hashlib.new(algorithm)
    cap = remote.size or UNKNOWN_SIZE_CAP
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _sigterm_raises():
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    if total is not None and total > cap:
                        raise OSError(f"could not download {url}: it announces {total:,} bytes, more than the "
                                      f"{cap:,} bytes {_expected(remote)}; the source serves a different file")
                    done = 0
                    if progress is not None:
                        progress(0, total, remote.filename)
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        if done + len(chunk) > cap:
                            raise OSError(f"could not download {url}: it sent more than the {cap:,} bytes "
                                          f"{_expected(remote)}; the source serves a different file")
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total, remote.filename)
            except urllib.error.HTTPError as exc:
                raise OSError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
            except urllib.error.URLError as exc:
                raise OSError(f"could not download {url}: {exc.reason}") from exc
            except (TimeoutError, ConnectionError) as exc:
                raise OSError(f"could not download {url}: {exc or type(exc).__name__}") from exc
            if total is not None and done != total:
                raise OSError(
                    f"could not download {url}: connection closed after {done} of {total} bytes"
                )
        actual = hasher.hexdigest()
        if remote.digest is not None and actual != remote.digest:
            raise ValueError(
                f"checksum mismatch for {target.name} downloaded from {url}: expected "
                f"{algorithm} {remote.digest}, got {actual}. The file was not saved; the "
                "source or mirror serves different bytes."
            )
        os.replace(tmp, target)
        return actual
    finally:  # every way out (an error, KeyboardInterrupt, SIGTERM via _sigterm_raises) removes the partial file
        if tmp.exists():
            tmp.unlink()


def _expected(remote: _RemoteFile) -> str:
    return "of the published file" if remote.size else "allowed for a file of unknown size"


@contextlib.contextmanager
def _sigterm_raises():
    """While a transfer runs in the main thread, SIGTERM raises ``SystemExit(143)`` (so the
    ``finally`` clauses remove the partial file) instead of killing the process at once;
    the previous handler is restored after. Left alone when SIGTERM already has a Python
    handler or is ignored, and outside the main thread (where handlers cannot be set)."""
    installed = False
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_DFL:
            def handler(signum, frame):
                raise SystemExit(128 + signum)
            signal.signal(signal.SIGTERM, handler)
            installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)
