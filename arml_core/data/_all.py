"""Data sets for ARML Explorer: built-in toys, the ARML paper's benchmarks, user files.

Every loader returns a :class:`Dataset` preprocessed as in the ARML paper
(Wang et al., NeurIPS 2020, section "Experiments"; ``docs/ARML_NOTES.md``
sections 1 and 9):

1. ``n_train`` (optional) subsamples the training split, stratified and seeded,
   *before* anything is fitted.
2. Labels are encoded ``0..C-1`` from the (possibly subsampled) training labels;
   a test label that never occurs in training is an error.
3. Features are min-max scaled to ``[0, 1]`` (scikit-learn ``MinMaxScaler``
   semantics: a constant feature is shifted to 0, not divided by 0) with the
   scaler fitted on the training split only and applied unchanged to the test
   split (test values may therefore fall slightly outside ``[0, 1]``).
4. The test split is shuffled with ``sklearn.utils.shuffle(X_test, y_test,
   random_state=seed)`` and its first ``n_test`` points are kept. The shuffle
   is always applied, so ``X_test[:1000]`` with ``seed=42`` is the paper's
   evaluation set whatever ``n_test`` is.

Sources:

* built-in (no files): ``figure1`` (hand-made 2-D toy), ``moons``, ``circles``,
  ``blobs`` (scikit-learn generators) and ``iris``, ``wine``, ``breast_cancer``,
  ``digits`` (bundled with scikit-learn). They are split 70/30, stratified.
* files (:data:`FILE_DATASETS`) under ``data_dir/<name>/`` with the publishers'
  file names; :func:`download` fetches and verifies them.
* a user's CSV or LIBSVM file: :func:`load_file`.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import os
import re
import struct
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence, Union

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils import shuffle as sk_shuffle

__all__ = [
    "BUILTIN_DATASETS",
    "FILE_DATASETS",
    "IMAGE_SHAPES",
    "Dataset",
    "available_datasets",
    "download",
    "list_datasets",
    "load_dataset",
    "load_file",
    "resolve_data_dir",
    "validate_for_k",
]

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

#: Fraction of a built-in or user data set held out as the test split.
BUILTIN_TEST_SIZE = 0.3
#: Fewest rows :func:`load_file` accepts.
MIN_ROWS = 4

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


# Checksums: the publisher's exact bytes (MANIFEST.md of the shared data, and its
# "Missing" section for the official usps.bz2). The official MNIST train-images
# .gz is only known by md5. LIBSVM splice.t has no known checksum.
_REMOTE: dict[str, tuple[_RemoteFile, ...]] = {
    "splice": (
        _RemoteFile("splice", f"{_LIBSVM_URL}/binary/splice", "sha256",
                    "eee33566cfe8988ec26122460cc712d66c5c5b79b966b259408e803addaa584d"),
        _RemoteFile("splice.t", f"{_LIBSVM_URL}/binary/splice.t", None, None),
    ),
    "pendigits": (
        _RemoteFile("pendigits", f"{_LIBSVM_URL}/multiclass/pendigits", "sha256",
                    "f3823d204ed5a3e9088267b4e141aac32503b8f2eb18c3469ad1212235db5ee6"),
        _RemoteFile("pendigits.t", f"{_LIBSVM_URL}/multiclass/pendigits.t", "sha256",
                    "8a5f65e742447d6b6d77d4e0cf70714f75d2801966ebfe492d7ffaf24acd9d9f"),
    ),
    "satimage": (
        _RemoteFile("satimage.scale", f"{_LIBSVM_URL}/multiclass/satimage.scale", "sha256",
                    "df08755887b968a272b84247fa0b1543b8cd623442fbc1c7943144e459ef2eb6"),
        _RemoteFile("satimage.scale.t", f"{_LIBSVM_URL}/multiclass/satimage.scale.t", "sha256",
                    "da3fb85baadd087beb9e8b32931224c443e26dc3305c09396170ab8997aedf92"),
    ),
    "usps": (
        _RemoteFile("usps.bz2", f"{_LIBSVM_URL}/multiclass/usps.bz2", "sha256",
                    "3771e9dd6ba685185f89867b6e249233dd74652389f263963b3b741e994b034f"),
        _RemoteFile("usps.t.bz2", f"{_LIBSVM_URL}/multiclass/usps.t.bz2", "sha256",
                    "a9c0164e797d60142a50604917f0baa604f326e9a689698763793fa5d12ffc4e"),
    ),
    "mnist": (
        _RemoteFile(_IDX_FILES[0], f"{_MNIST_URL}/{_IDX_FILES[0]}", "md5",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        _RemoteFile(_IDX_FILES[1], f"{_MNIST_URL}/{_IDX_FILES[1]}", "sha256",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        _RemoteFile(_IDX_FILES[2], f"{_MNIST_URL}/{_IDX_FILES[2]}", "sha256",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        _RemoteFile(_IDX_FILES[3], f"{_MNIST_URL}/{_IDX_FILES[3]}", "sha256",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
    "fashion-mnist": (
        _RemoteFile(_IDX_FILES[0], f"{_FASHION_URL}/{_IDX_FILES[0]}", "sha256",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        _RemoteFile(_IDX_FILES[1], f"{_FASHION_URL}/{_IDX_FILES[1]}", "sha256",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        _RemoteFile(_IDX_FILES[2], f"{_FASHION_URL}/{_IDX_FILES[2]}", "sha256",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        _RemoteFile(_IDX_FILES[3], f"{_FASHION_URL}/{_IDX_FILES[3]}", "sha256",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
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
# The Dataset container
# --------------------------------------------------------------------------- #
@dataclass
class Dataset:
    """A preprocessed train/test pair.

    ``X_*`` are float64 ``(n, n_features)`` arrays, min-max scaled with the
    training split's scaler; ``y_*`` are int64 codes ``0..C-1``;
    ``classes[c]`` is the original label of code ``c``.
    """

    name: str
    X_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    classes: np.ndarray = field(repr=False)
    image_shape: tuple[int, int] | None = None
    feature_names: list[str] | None = field(default=None, repr=False)
    description: str = ""
    subsampled: bool = False
    source: str = ""

    @property
    def n_features(self) -> int:
        """Number of features (columns of ``X_train``)."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return int(len(self.classes))

    @property
    def n_train(self) -> int:
        """Number of training points."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test points."""
        return int(self.X_test.shape[0])


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


def list_datasets(data_dir: PathLike | None = None) -> dict[str, bool]:
    """Every known data set name mapped to whether it can be loaded now.

    Built-ins are always available; a file data set is available when all its
    files are present under ``data_dir`` (see :func:`resolve_data_dir`).
    """
    folder = resolve_data_dir(data_dir)
    out = {name: True for name in BUILTIN_DATASETS}
    for name in FILE_DATASETS:
        out[name] = _find_files(name, folder)[0] is not None
    return out


def available_datasets(data_dir: PathLike | None = None) -> list[str]:
    """Names of the data sets that can be loaded now (built-ins first)."""
    return [name for name, ok in list_datasets(data_dir).items() if ok]


# --------------------------------------------------------------------------- #
# Public loaders
# --------------------------------------------------------------------------- #
def load_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
) -> Dataset:
    """Load a built-in or file data set, preprocessed as in the ARML paper.

    Parameters
    ----------
    name
        One of :data:`BUILTIN_DATASETS` or :data:`FILE_DATASETS`.
    data_dir
        Folder holding ``<name>/<files>`` for file data sets; default
        ``$ARML_DATA_DIR`` or ``./data``.
    n_train
        Keep this many training points (stratified, seeded) before scaling.
        ``None`` or a number at least the training size keeps all.
    n_test
        Keep the first ``n_test`` test points after the seeded shuffle
        (the paper uses ``seed=42, n_test=1000``).
    seed
        Seed for generators, the built-in train/test split, subsampling and
        the test shuffle.

    Raises
    ------
    ValueError
        Unknown name, bad ``n_train``/``n_test``, a test label unseen in training.
    FileNotFoundError
        A file data set whose files are missing (the message lists the paths).
    """
    key = _normalize_name(name)
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    if key in BUILTIN_DATASETS:
        raw = _load_builtin(key, seed)
    elif key in FILE_DATASETS:
        raw = _load_files(key, resolve_data_dir(data_dir))
    else:
        raise ValueError(
            f"unknown data set {name!r}. Built-in data sets: {', '.join(BUILTIN_DATASETS)}. "
            f"Data sets read from files: {', '.join(FILE_DATASETS)}. "
            "For your own CSV or LIBSVM file use load_file()."
        )
    return _prepare(raw, n_train=n_train, n_test=n_test, seed=seed)


def load_file(
    path_or_buffer: PathLike | IO[bytes] | IO[str] | bytes,
    *,
    fmt: str | None = None,
    test_size: float | int = BUILTIN_TEST_SIZE,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
    name: str | None = None,
) -> Dataset:
    """Load a user's CSV or LIBSVM file, split it and preprocess it.

    CSV: one row per point, the label in the LAST column, numeric features,
    separator ``,`` ``;`` tab or whitespace, an optional header row (detected
    when the first row's feature cells are not numbers). Labels may be numbers
    or text. LIBSVM: ``label index:value ...`` lines. ``.gz``/``.bz2``
    compressed content is accepted.

    The rows are split stratified into train/test (``test_size`` as in
    ``train_test_split``, seeded) and then preprocessed as :func:`load_dataset`.

    ``path_or_buffer`` is a path, raw ``bytes``, or a file-like object in
    binary or text mode (e.g. Streamlit's ``UploadedFile``). ``fmt`` is
    ``None`` (guess from the file name, else the content), ``'csv'`` or
    ``'libsvm'``.

    Raises ``ValueError`` with a message saying what to fix for: an empty
    file, missing/NaN/infinite values, non-numeric features, ragged rows,
    unparseable LIBSVM, fewer than 4 rows, a single class, a class with one
    point (cannot be stratified), or a bad ``test_size``.
    """
    if fmt is not None and fmt not in ("csv", "libsvm"):
        raise ValueError(f"fmt must be None, 'csv' or 'libsvm', got {fmt!r}")
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    data, filename = _read_input(path_or_buffer)
    data = _maybe_decompress(data)
    if not data.strip():
        raise ValueError(f"{filename or 'the file'} is empty: there are no rows to load")
    fmt = fmt or _guess_format(filename, data)
    if fmt == "csv":
        X, y, feature_names = _parse_csv(data)
    else:
        X, y = _parse_libsvm(data)
        feature_names = None
    _check_split_able(y)

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)) and not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction strictly between 0 and 1, got {test_size}")
    if isinstance(test_size, (int, np.integer)) and not 1 <= int(test_size) < len(y):
        raise ValueError(f"test_size must be between 1 and {len(y) - 1} rows, got {test_size}")
    try:
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=seed
        )
    except ValueError as exc:
        n_classes = len(np.unique(y))
        raise ValueError(
            f"cannot split {len(y)} rows with {n_classes} classes into stratified train/test "
            f"parts with test_size={test_size}: both parts need at least one point of every "
            f"class. Use a test_size giving at least {n_classes} test rows, or add data "
            f"({exc})"
        ) from None

    display = name or (Path(filename).stem if filename else "uploaded data")
    frac = (f"{float(test_size):.0%}" if isinstance(test_size, (float, np.floating))
            else f"{int(test_size)} rows")
    head = (
        f"User file {filename or '(uploaded)'} ({fmt.upper()}): {len(y)} rows, "
        f"{X.shape[1]} features, split stratified into train/test with {frac} held out "
        f"(seed {seed})."
    )
    raw = _Raw(
        name=display, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te,
        head=head, source=f"file:{filename}" if filename else "file:(uploaded)",
        feature_names=feature_names,
    )
    return _prepare(raw, n_train=n_train, n_test=n_test, seed=seed)


def validate_for_k(dataset: Dataset, K: int) -> int:
    """Check that ``K`` suits the training labels (odd, at most the smallest class).

    Returns ``K`` as an int; raises ``ValueError`` with an actionable message.
    """
    from ..knn import check_n_neighbors  # lazy: keeps torch out of data-only imports

    return check_n_neighbors(K, dataset.y_train)


# --------------------------------------------------------------------------- #
# Preprocessing shared by every source
# --------------------------------------------------------------------------- #
@dataclass
class _Raw:
    """Unprocessed splits plus what the description needs."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    head: str
    source: str
    feature_names: list[str] | None = None
    image_shape: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)


def _check_count(arg: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{arg} must be a positive integer or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{arg} must be at least 1 (or None for all points), got {value}")


def _label_values(y: np.ndarray) -> np.ndarray:
    """Labels as int64 when they are integral numbers, else unchanged."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def _prepare(raw: _Raw, *, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    X_tr, y_tr = raw.X_train, _label_values(raw.y_train)
    X_te, y_te = raw.X_test, _label_values(raw.y_test)
    notes = list(raw.notes)
    n_tr_all, n_te_all = len(y_tr), len(y_te)
    subsampled = False

    # 1. stratified subsample of the training split, before anything is fitted
    if n_train is not None:
        if n_train < n_tr_all:
            labels, counts = np.unique(y_tr, return_counts=True)
            if n_train < len(labels):
                raise ValueError(
                    f"n_train={n_train} is smaller than the number of classes ({len(labels)}); "
                    "a stratified subsample needs at least one point per class"
                )
            if counts.min() < 2:
                raise ValueError(
                    f"cannot subsample the training set stratified: class {labels[counts.argmin()]!r} "
                    "has a single training point; use n_train=None"
                )
            X_tr, _, y_tr, _ = train_test_split(
                X_tr, y_tr, train_size=int(n_train), stratify=y_tr, random_state=seed
            )
            subsampled = True
            notes.append(
                f"Training set subsampled to {n_train} of {n_tr_all} points (stratified, seed {seed})."
            )
        else:
            notes.append(
                f"n_train={n_train} asked for, but only {n_tr_all} training points exist: all are used."
            )

    # 2. labels encoded from the training labels
    classes = np.unique(y_tr)
    # 3. test split: seeded shuffle, then the first n_test points
    X_te, y_te = sk_shuffle(X_te, y_te, random_state=seed)
    if n_test is not None:
        if n_test < n_te_all:
            X_te, y_te = X_te[:n_test], y_te[:n_test]
            subsampled = True
            notes.append(
                f"Test set: the first {n_test} of {n_te_all} points after shuffling (seed {seed})."
            )
        else:
            notes.append(
                f"n_test={n_test} asked for, but only {n_te_all} test points exist: all are used "
                f"(shuffled, seed {seed})."
            )
    else:
        notes.append(f"Test set: all {n_te_all} points, shuffled (seed {seed}).")

    unseen = np.setdiff1d(np.unique(y_te), classes)
    if unseen.size:
        raise ValueError(
            f"the test split holds label(s) {unseen.tolist()[:10]} that never occur in the training "
            f"split (training labels: {classes.tolist()[:20]}); a classifier cannot predict them. "
            "Use more training points (larger n_train) or remove those rows."
        )
    y_tr_enc = np.searchsorted(classes, y_tr).astype(np.int64)
    y_te_enc = np.searchsorted(classes, y_te).astype(np.int64)

    # 4. min-max scaling fitted on the training split only
    X_tr = np.asarray(X_tr, dtype=np.float64)
    X_te = np.asarray(X_te, dtype=np.float64)
    scaler = MinMaxScaler().fit(X_tr)
    X_tr = np.ascontiguousarray(scaler.transform(X_tr), dtype=np.float64)
    X_te = np.ascontiguousarray(scaler.transform(X_te), dtype=np.float64)

    description = " ".join(
        [
            raw.head,
            f"Loaded: {len(y_tr_enc)} training and {len(y_te_enc)} test points, "
            f"{X_tr.shape[1]} features, {len(classes)} classes.",
            *notes,
            "Features min-max scaled to [0, 1] with the scaler fitted on the training split only.",
        ]
    )
    return Dataset(
        name=raw.name,
        X_train=X_tr,
        y_train=y_tr_enc,
        X_test=X_te,
        y_test=y_te_enc,
        classes=classes,
        image_shape=raw.image_shape,
        feature_names=raw.feature_names,
        description=description,
        subsampled=subsampled,
        source=raw.source,
    )


# --------------------------------------------------------------------------- #
# Built-in data sets
# --------------------------------------------------------------------------- #
def _figure1() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``figure1`` toy, in the spirit of Figure 1 of Wang et al. (NeurIPS 2020).

    Two classes in the unit square, separated along ``x`` at ``x = 0.5`` but
    interleaved along ``y``. Training points (13):

    * class 0: a column at ``x = 0.45``, ``y = 0, 0.2, ..., 1.0`` (6 points),
      plus an anchor ``(0, 0.5)``;
    * class 1: a column at ``x = 0.55``, ``y = 0.1, 0.3, ..., 0.9`` (5 points),
      plus an anchor ``(1, 0.5)``.

    The columns are 0.1 apart in ``x`` while points of one class are 0.2 apart
    in ``y``, so under the Euclidean metric a point just left of the boundary
    at the height of a class-1 point is nearer to class 1. Test points (6):
    ``(0.47, 0.1)`` and ``(0.47, 0.5)`` (class 0), ``(0.53, 0.4)`` and
    ``(0.53, 0.8)`` (class 1) -- all four misclassified by Euclidean 1-NN and
    correct once ``x`` is stretched (e.g. ``M = diag(16, 1)``) -- plus the easy
    ``(0.1, 0.3)`` (class 0) and ``(0.9, 0.7)`` (class 1). The training
    points already span ``[0, 1]`` in both coordinates, so min-max scaling
    leaves them unchanged.
    """
    c0 = [(0.45, y) for y in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)] + [(0.0, 0.5)]
    c1 = [(0.55, y) for y in (0.1, 0.3, 0.5, 0.7, 0.9)] + [(1.0, 0.5)]
    X_train = np.array(c0 + c1, dtype=np.float64)
    y_train = np.array([0] * len(c0) + [1] * len(c1), dtype=np.int64)
    X_test = np.array(
        [(0.47, 0.1), (0.47, 0.5), (0.53, 0.4), (0.53, 0.8), (0.1, 0.3), (0.9, 0.7)],
        dtype=np.float64,
    )
    y_test = np.array([0, 0, 1, 1, 0, 1], dtype=np.int64)
    return X_train, y_train, X_test, y_test


def _load_builtin(name: str, seed: int) -> _Raw:
    from sklearn import datasets as skd

    if name == "figure1":
        X_tr, y_tr, X_te, y_te = _figure1()
        return _Raw(
            name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te,
            head=(
                "Built-in 'figure1': a hand-made 2-D two-class toy in the spirit of Figure 1 of "
                "Wang et al. (NeurIPS 2020): two columns of points 0.1 apart in x, interleaved "
                "along y, so stretching the x axis changes which class is nearest. Fixed 13 "
                "training and 6 test points (no random split)."
            ),
            source="builtin:figure1", feature_names=["x", "y"],
        )

    feature_names: list[str] | None = None
    if name == "moons":
        X, y = skd.make_moons(n_samples=300, noise=0.25, random_state=seed)
        head = "Built-in 'moons': scikit-learn make_moons, 300 points, noise 0.25"
        feature_names = ["x1", "x2"]
    elif name == "circles":
        X, y = skd.make_circles(n_samples=300, noise=0.1, factor=0.5, random_state=seed)
        head = "Built-in 'circles': scikit-learn make_circles, 300 points, noise 0.1, factor 0.5"
        feature_names = ["x1", "x2"]
    elif name == "blobs":
        X, y = skd.make_blobs(n_samples=300, centers=3, n_features=2, cluster_std=1.5,
                              random_state=seed)
        head = "Built-in 'blobs': scikit-learn make_blobs, 300 points, 3 centres, std 1.5"
        feature_names = ["x1", "x2"]
    else:
        loader = {
            "iris": skd.load_iris,
            "wine": skd.load_wine,
            "breast_cancer": skd.load_breast_cancer,
            "digits": skd.load_digits,
        }[name]
        bunch = loader()
        X, y = bunch.data, bunch.target
        if name != "digits":
            feature_names = [str(f) for f in bunch.feature_names]
        head = (
            f"Built-in '{name}': scikit-learn bundled copy of the UCI {name.replace('_', ' ')} "
            f"data set, {len(y)} points"
        )
    if name in ("moons", "circles", "blobs"):
        head += f" (generated with seed {seed})"
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=BUILTIN_TEST_SIZE, stratify=y, random_state=seed
    )
    head += (
        f"; split {1 - BUILTIN_TEST_SIZE:.0%}/{BUILTIN_TEST_SIZE:.0%} stratified into "
        f"{len(y_tr)} training and {len(y_te)} test points (seed {seed})."
    )
    return _Raw(
        name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te, head=head,
        source=f"builtin:{name}", feature_names=feature_names,
        image_shape=IMAGE_SHAPES.get(name),
    )


# --------------------------------------------------------------------------- #
# File data sets
# --------------------------------------------------------------------------- #
def _missing_files_error(name: str, data_dir: Path, looked: Sequence[Path]) -> FileNotFoundError:
    paths = "\n  ".join(str(p) for p in looked)
    return FileNotFoundError(
        f"data set {name!r} needs files that are not in the data folder {str(data_dir)!r} "
        f"(resolved: {data_dir.resolve()}). Looked for (one of each pair):\n  {paths}\n"
        f"Fetch them with `python -m arml_core download {name}`, or point the environment "
        f"variable {_ENV_VAR} (or the data_dir argument) at a folder holding {name}/."
    )


def _load_files(name: str, data_dir: Path) -> _Raw:
    found, looked = _find_files(name, data_dir)
    if found is None:
        raise _missing_files_error(name, data_dir, looked)
    notes: list[str] = []
    if name in _LIBSVM_FILES:
        from sklearn.datasets import load_svmlight_files

        n_features = _LIBSVM_FILES[name][2]
        try:
            X_tr, y_tr, X_te, y_te = load_svmlight_files(
                [_svmlight_source(p) for p in found], n_features=n_features, zero_based=False
            )
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(
                f"could not read the LIBSVM files {[str(p) for p in found]} for {name!r} "
                f"(expected {n_features} features, 1-based indices): {exc}"
            ) from exc
        X_tr, X_te = X_tr.toarray(), X_te.toarray()
        for path in found:
            note = _KNOWN_VARIANTS.get(name, {}).get(_file_digest(path, "sha256"))
            if note:
                notes.append(note)
    else:
        X_tr = _read_idx_images(found[0])
        y_tr = _read_idx_labels(found[1])
        X_te = _read_idx_images(found[2])
        y_te = _read_idx_labels(found[3])
        for X, y, which in ((X_tr, y_tr, "train"), (X_te, y_te, "t10k")):
            if len(X) != len(y):
                raise ValueError(
                    f"{name}: the {which} images file holds {len(X)} images but the {which} "
                    f"labels file holds {len(y)} labels; one of the files is wrong or truncated"
                )
        X_tr = X_tr.reshape(len(X_tr), -1)
        X_te = X_te.reshape(len(X_te), -1)
    head = (
        f"{_SOURCES[name]}, read from {data_dir / name}: {len(y_tr)} training and "
        f"{len(y_te)} test points as published."
    )
    return _Raw(
        name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te, head=head,
        source=f"file:{data_dir / name}", image_shape=IMAGE_SHAPES.get(name), notes=notes,
    )


def _svmlight_source(path: Path) -> str | io.BytesIO:
    """A LIBSVM file for ``load_svmlight_files``; .bz2 is decompressed in memory (2x faster)."""
    if path.suffix == ".bz2":
        return io.BytesIO(bz2.decompress(path.read_bytes()))
    return str(path)


def _open_maybe_gz(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally .gz) and check magic and size."""
    try:
        with _open_maybe_gz(path) as fh:
            header = fh.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim:
                raise ValueError(f"{path}: file too short for an IDX header ({len(header)} bytes)")
            got_magic, *dims = struct.unpack(f">{1 + ndim}I", header)
            if got_magic != magic:
                raise ValueError(
                    f"{path}: IDX magic number {got_magic} (0x{got_magic:08x}) but {magic} "
                    f"(0x{magic:08x}) was expected; is this the right file?"
                )
            body = fh.read()
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: could not decompress/read the IDX file: {exc}") from exc
    expected = int(np.prod(dims))
    if len(body) != expected:
        raise ValueError(
            f"{path}: IDX header announces {' x '.join(map(str, dims))} = {expected} bytes of "
            f"data but the file holds {len(body)}; the file is truncated or corrupt"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_idx_images(path: Path) -> np.ndarray:
    return _read_idx(path, 2051, 3)


def _read_idx_labels(path: Path) -> np.ndarray:
    return _read_idx(path, 2049, 1).astype(np.int64)


# --------------------------------------------------------------------------- #
# User files
# --------------------------------------------------------------------------- #
def _read_input(src: Any) -> tuple[bytes | str, str | None]:
    """Content and (if known) file name of a path, bytes or file-like object."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), None
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return path.read_bytes(), path.name
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            try:
                src.seek(0)
            except (OSError, ValueError):
                pass
        data = src.read()
        fname = getattr(src, "name", None)
        fname = Path(fname).name if isinstance(fname, str) and fname else None
        if not isinstance(data, (bytes, str)):
            raise ValueError(f"reading the file object gave {type(data).__name__}, not bytes or text")
        return data, fname
    raise ValueError(
        f"expected a path, bytes or a file-like object, got {type(src).__name__}"
    )


def _maybe_decompress(data: bytes | str) -> bytes | str:
    if isinstance(data, bytes):
        try:
            if data[:2] == b"\x1f\x8b":
                return gzip.decompress(data)
            if data[:3] == b"BZh":
                return bz2.decompress(data)
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"the file looks compressed but could not be decompressed: {exc}") from exc
    return data


def _to_text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.lstrip("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_LIBSVM_TOKEN = re.compile(r"^\d+:\S+$")


def _guess_format(filename: str | None, data: bytes | str) -> str:
    if filename:
        lower = filename.lower()
        for suffix in (".gz", ".bz2"):
            if lower.endswith(suffix):
                lower = lower[: -len(suffix)]
        if lower.endswith((".csv", ".tsv")):
            return "csv"
        if lower.endswith((".libsvm", ".svm", ".svmlight", ".scale", ".t")):
            return "libsvm"
    text = _to_text(data[:65536] if isinstance(data, (bytes, str)) else data)
    for line in text.splitlines():
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if len(tokens) >= 2 and all(_LIBSVM_TOKEN.match(t) for t in tokens[1:]):
            return "libsvm"
        return "csv"
    return "csv"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _split_rows(text: str) -> tuple[list[list[str]], list[int]]:
    """Cells of every non-blank line, and each line's 1-based line number."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter: str | None
    if "," in first:
        delimiter = ","
    elif ";" in first:
        delimiter = ";"
    elif "\t" in first:
        delimiter = "\t"
    else:
        delimiter = None  # runs of whitespace
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if delimiter is None:
            cells = line.split()
        else:
            cells = next(csv.reader([line], delimiter=delimiter))
        rows.append([c.strip() for c in cells])
        line_numbers.append(number)
    return rows, line_numbers


def _parse_csv(data: bytes | str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    rows, line_numbers = _split_rows(_to_text(data))
    if not rows:
        raise ValueError("the file is empty: there are no rows to load")
    width = len(rows[0])
    if width < 2:
        raise ValueError(
            "each row needs at least two columns (features, then the label in the last column); "
            f"line {line_numbers[0]} has {width}. Is the separator a comma, semicolon or tab?"
        )
    bad = [(ln, len(r)) for r, ln in zip(rows, line_numbers) if len(r) != width]
    if bad:
        listed = ", ".join(f"line {ln} has {n}" for ln, n in bad[:5])
        raise ValueError(
            f"ragged rows: the first row has {width} columns but {listed}"
            f"{' (and more)' if len(bad) > 5 else ''}. Every row must have the same number of "
            "columns (features, then the label)."
        )

    # header: the first row holds text where the rest of its column holds numbers
    # (or holds only text in its feature cells)
    first, rest = rows[0], rows[1:]

    def text_over_numbers(j: int) -> bool:
        return first[j] != "" and not _is_number(first[j]) and all(_is_number(r[j]) for r in rest if r[j] != "")

    header = (
        any(text_over_numbers(j) for j in range(width))
        or not any(_is_number(c) for c in first[:-1])
    )
    if header:
        feature_names: list[str] | None = [c or f"column {j + 1}" for j, c in enumerate(first[:-1])]
        rows, line_numbers = rows[1:], line_numbers[1:]
        if not rows:
            raise ValueError("the file holds only a header row and no data")
    else:
        feature_names = None

    def column_label(j: int) -> str:
        if feature_names is not None:
            return f"column {j + 1} ({feature_names[j]!r})"
        return f"column {j + 1}"

    if len(rows) < MIN_ROWS:
        raise ValueError(
            f"only {len(rows)} data row(s); at least {MIN_ROWS} are needed to split into "
            "train and test parts"
        )

    cells = [r[:-1] for r in rows]
    try:
        X = np.array(cells, dtype=np.float64)
    except ValueError:
        X = None
    if X is None:
        # find the culprits: non-numeric columns, else empty cells
        text_cols: dict[int, tuple[int, str]] = {}
        empty: list[tuple[int, int]] = []
        for i, row in enumerate(cells):
            for j, c in enumerate(row):
                if c == "":
                    empty.append((i, j))
                elif j not in text_cols and not _is_number(c):
                    text_cols[j] = (i, c)
        if text_cols:
            parts = [
                f"{column_label(j)} (data row {i + 1}, file line {line_numbers[i]}: {c!r})"
                for j, (i, c) in sorted(text_cols.items())[:5]
            ]
            raise ValueError(
                "non-numeric feature column(s): " + "; ".join(parts) + ". Features must be "
                "numbers: encode text columns as numbers or drop them. The label goes in the "
                "last column."
            )
        parts = [
            f"data row {i + 1} (file line {line_numbers[i]}), {column_label(j)}" for i, j in empty[:5]
        ]
        raise ValueError(
            f"missing values (empty cells) at {'; '.join(parts)}"
            f"{' and more' if len(empty) > 5 else ''}. Fill or drop those rows."
        )
    _check_finite(X, line_numbers, column_label)

    labels = [r[-1] for r in rows]
    empty_labels = [i for i, lab in enumerate(labels) if lab == ""]
    if empty_labels:
        where = ", ".join(f"data row {i + 1} (file line {line_numbers[i]})" for i in empty_labels[:5])
        raise ValueError(f"missing label (last column empty) in {where}")
    if all(_is_number(lab) for lab in labels):
        y = np.array([float(lab) for lab in labels])
        if not np.all(np.isfinite(y)):
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(
                f"the label of data row {i + 1} (file line {line_numbers[i]}) is {labels[i]!r}; "
                "labels must be finite numbers or text"
            )
    else:
        y = np.array(labels, dtype=str)
    return X, y, feature_names


def _check_finite(X: np.ndarray, line_numbers: Sequence[int] | None, column_label: Callable[[int], str]) -> None:
    bad = np.argwhere(~np.isfinite(X))
    if bad.size == 0:
        return
    parts = []
    for i, j in bad[:5]:
        where = f"row {i + 1}"
        if line_numbers is not None:
            where = f"data row {i + 1} (file line {line_numbers[i]})"
        parts.append(f"{where}, {column_label(int(j))}: {X[i, j]}")
    raise ValueError(
        f"{len(bad)} NaN or infinite value(s), first at: {'; '.join(parts)}. "
        "Remove or fill those values before loading."
    )


def _parse_libsvm(data: bytes | str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        X, y = load_svmlight_file(io.BytesIO(raw), zero_based="auto")
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"could not parse the file as LIBSVM (one point per line: 'label index:value "
            f"index:value ...', indices increasing): {exc}"
        ) from None
    if X.shape[0] == 0:
        raise ValueError("the LIBSVM file holds no data lines")
    if X.shape[0] < MIN_ROWS:
        raise ValueError(
            f"only {X.shape[0]} data row(s); at least {MIN_ROWS} are needed to split into "
            "train and test parts"
        )
    X = X.toarray()
    _check_finite(X, None, lambda j: f"feature {j + 1}")
    if not np.all(np.isfinite(y)):
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"the label of row {i + 1} is {y[i]}; labels must be finite numbers")
    return X, y


def _check_split_able(y: np.ndarray) -> None:
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise ValueError(
            f"all {len(y)} rows have the same label ({labels[0]!r}): a single class; "
            "classification needs at least two classes (the label is the last column)"
        )
    lonely = labels[counts < 2]
    if lonely.size:
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in lonely[:10])
        raise ValueError(
            f"class(es) {shown} have only 1 point: every class needs at least 2 points to be "
            "split stratified into train and test. Add points or remove those rows."
        )


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
    any failure the temporary file is removed and an existing file is left
    untouched. A file already present whose checksum matches is skipped (no
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    if progress is not None:
                        progress(0, total, remote.filename)
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
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
    finally:
        if tmp.exists():
            tmp.unlink()
