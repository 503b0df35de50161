"""The paper's preprocessing and the public loaders.

:func:`load_dataset` (a built-in or a file data set by name) and :func:`load_file`
(a user's CSV or LIBSVM file, split stratified) both hand raw splits to
:func:`_prepare`, whose docstring states the preprocessing of the ARML paper once:
subsample the training split, encode the labels, min-max scale with the training
split's scaler, shuffle the test split. The result is a :class:`Dataset`;
:func:`validate_for_k` checks a K-NN's ``K`` against its training labels.

See ``ARML_NOTES.md`` sections 1 and 9 for the setting and the evaluation protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils import check_scalar
from sklearn.utils import shuffle as sk_shuffle

from ..limits import Limits, get_limits
from .builtin import BUILTIN_TEST_SIZE, _load_builtin
from .readers import _guess_format, _load_files, _maybe_decompress, _parse_csv, _parse_libsvm, _Raw, _read_input
from .sources import BUILTIN_DATASETS, FILE_DATASETS, PathLike, _normalize_name, resolve_data_dir


# --------------------------------------------------------------------------- #
# The Dataset container
# --------------------------------------------------------------------------- #
@dataclass
class Dataset:
    """A preprocessed train/test pair.

    ``X_*`` are float64 ``(n, n_features)`` arrays, min-max scaled with the
    training split's scaler; ``y_*`` are int64 codes ``0..C-1``;
    ``classes[c]`` is the original label of code ``c``. ``source`` is
    ``builtin:<name>``, ``file:<name>`` (a data set's folder in the data folder) or
    ``file:<file name>`` (a user's file); ``description`` says how the points were
    read and preprocessed, without the data folder's place on the machine.
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
# Preprocessing shared by every source
# --------------------------------------------------------------------------- #
def _check_scalar(value, name: str, types: tuple[type, ...], *, type_error: str, range_error: str,
                  **bounds) -> None:
    """``sklearn.utils.check_scalar``, but a bool is no number and every failure is a ``ValueError``.

    ``check_scalar`` raises ``TypeError`` for a wrong type and accepts ``True`` as 1; the
    loaders have always raised ``ValueError`` (with these messages) for both.
    """
    if isinstance(value, bool):
        raise ValueError(type_error)
    try:
        check_scalar(value, name, types, **bounds)
    except TypeError:
        raise ValueError(type_error) from None
    except ValueError:
        raise ValueError(range_error) from None


def _check_count(arg: str, value: int | None) -> None:
    """``n_train``/``n_test``: None (all points) or an integer at least 1."""
    if value is not None:
        _check_scalar(value, arg, (int, np.integer), min_val=1,
                      type_error=f"{arg} must be a positive integer or None, got {value!r}",
                      range_error=f"{arg} must be at least 1 (or None for all points), got {value}")


def _label_values(y: np.ndarray) -> np.ndarray:
    """Labels as int64 when they are integral numbers, else unchanged."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def _prepare(raw: _Raw, *, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    """Preprocess raw splits as in the ARML paper (Wang et al., NeurIPS 2020, "Experiments").

    Every loader, whatever the source, ends here:

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

    The description is ``raw.head``, the sizes loaded, ``raw.notes`` and a note for each
    step that changed the points.
    """
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
    # 4. test split: seeded shuffle, then the first n_test points
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

    # 3. min-max scaling fitted on the training split only (row by row: the shuffle does not matter)
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
    limits: Limits | None = None,
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
    ``'libsvm'``. ``limits`` (default: :func:`arml_core.limits.get_limits`) caps the
    bytes, points, features and dense entries of the file; they are checked before the
    matrix is allocated.

    Raises ``ValueError`` with a message saying what to fix for: an empty
    file, missing/NaN/infinite values, non-numeric features, ragged rows,
    unparseable LIBSVM, fewer than 4 rows, a single class, a class with one
    point (cannot be stratified), a bad ``test_size``, or a file over ``limits`` (the
    message names the limit and how to raise it).
    """
    if fmt is not None and fmt not in ("csv", "libsvm"):
        raise ValueError(f"fmt must be None, 'csv' or 'libsvm', got {fmt!r}")
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    lim = get_limits(limits)
    data, filename = _read_input(path_or_buffer, lim)
    data = _maybe_decompress(data, lim)
    if not data.strip():
        raise ValueError(f"{filename or 'the file'} is empty: there are no rows to load")
    fmt = fmt or _guess_format(filename, data)
    if fmt == "csv":
        X, y, feature_names = _parse_csv(data, lim)
    else:
        X, y = _parse_libsvm(data, lim)
        feature_names = None
    _check_split_able(y)

    # by hand, not check_scalar: a fraction or a row count, and NaN would pass its range check
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


def _check_split_able(y: np.ndarray) -> None:
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise ValueError(
            f"all {len(y)} rows have the same label ({labels[0].item()!r}): a single class; "
            "classification needs at least two classes (the label is the last column)"
        )
    lonely = labels[counts < 2]
    if lonely.size:
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in lonely[:10])
        raise ValueError(
            f"class(es) {shown} have only 1 point: every class needs at least 2 points to be "
            "split stratified into train and test. Add points or remove those rows."
        )


def validate_for_k(dataset: Dataset, K: int) -> int:
    """Check that ``K`` suits the training labels (odd, at most the smallest class).

    Returns ``K`` as an int; raises ``ValueError`` with an actionable message.
    """
    from ..knn import check_n_neighbors  # lazy: keeps torch out of data-only imports

    return check_n_neighbors(K, dataset.y_train)
