"""Readers: the files of the paper's data sets and users' files, parsed into raw splits.

A reader returns a :class:`_Raw` (the unprocessed train/test splits and the head of
their description) or the arrays of a user's file; ``prepare`` then applies the paper's
preprocessing. Formats: LIBSVM (``label index:value ...``, through scikit-learn's
svmlight reader), IDX (MNIST, Fashion-MNIST; unsigned bytes, magic number and size
checked), CSV (the label in the last column, separator and header detected), each
optionally ``.gz``/``.bz2`` compressed; :func:`_guess_format` tells LIBSVM from CSV by
the file name, else the content. Every malformed input is a ``ValueError`` saying what
to fix. A user's file is checked against :class:`~arml_core.limits.Limits` (bytes read
and decompressed, points, features, dense entries) before anything of its size is
allocated; the data folder's IDX files are read no further than their header announces.

See ``ARML_NOTES.md`` sections 1 and 9 for the data sets and their files.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import math
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np

from ..limits import DEFAULT_LIMITS, Limits
from .sources import (IMAGE_SHAPES, _KNOWN_VARIANTS, _LIBSVM_FILES, _SOURCES, _file_digest, _find_files,
                      _missing_files_error)

#: Fewest rows :func:`load_file` accepts.
MIN_ROWS = 4
#: Most data bytes an IDX file may announce (MNIST's training images: 47 MB).
_IDX_MAX_BYTES = 2**31


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


# --------------------------------------------------------------------------- #
# File data sets
# --------------------------------------------------------------------------- #
def _load_files(name: str, data_dir: Path) -> _Raw:
    """The raw splits of file data set ``name`` from ``data_dir/name/`` (FileNotFoundError lists what is missing)."""
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
        except (ValueError, OSError, EOFError, OverflowError) as exc:
            raise ValueError(
                f"could not read the LIBSVM files {[str(p) for p in found]} for {name!r} "
                f"(expected {n_features} features, 1-based indices): {exc}"
            ) from exc
        for X, which in ((X_tr, found[0]), (X_te, found[1])):
            if X.shape[0] == 0:
                raise ValueError(f"{name}: {which.name} holds no data lines; the file is empty or not LIBSVM")
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
    # the files as named in the data folder, not where that folder is: a description
    # (recorded by ``reproduce``) is then the same on every machine
    files = [f"{name}/{p.name}" for p in found]
    head = (
        f"{_SOURCES[name]}, read from {', '.join(files[:-1])} and {files[-1]} in the data folder: "
        f"{len(y_tr)} training and {len(y_te)} test points as published."
    )
    return _Raw(
        name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te, head=head,
        source=f"file:{name}", image_shape=IMAGE_SHAPES.get(name), notes=notes,
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
            expected = math.prod(dims)
            if expected > _IDX_MAX_BYTES:
                raise ValueError(
                    f"{path}: IDX header announces {' x '.join(map(str, dims))} = {expected:,} bytes of data, "
                    f"more than the {_IDX_MAX_BYTES:,} an IDX file of this project may hold; the file is corrupt"
                )
            body = fh.read(expected + 1)  # a longer (or endless) stream is not read past the header's size
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: could not decompress/read the IDX file: {exc}") from exc
    if len(body) > expected:
        raise ValueError(
            f"{path}: IDX header announces {' x '.join(map(str, dims))} = {expected} bytes of "
            "data but the file holds more; the file is corrupt or not the published one"
        )
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
def _read_input(src: Any, limits: Limits) -> tuple[bytes | str, str | None]:
    """Content and (if known) file name of a path, bytes or file-like object, at most
    ``limits.max_bytes`` of it (checked before reading where the size is known)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        limits.check("max_bytes", len(src), "the file's size in bytes")
        return bytes(src), None
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        limits.check("max_bytes", path.stat().st_size, f"the size of {path.name} in bytes")
        return path.read_bytes(), path.name
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            try:
                src.seek(0)
            except (OSError, ValueError):
                pass
        try:
            data = src.read(limits.max_bytes + 1)
        except TypeError:  # a read() without a size argument
            data = src.read()
        fname = getattr(src, "name", None)
        fname = Path(fname).name if isinstance(fname, str) and fname else None
        if not isinstance(data, (bytes, str)):
            raise ValueError(f"reading the file object gave {type(data).__name__}, not bytes or text")
        if len(data) > limits.max_bytes:
            limits.check("max_bytes", len(data), "the file's size in bytes (at least)")
        return data, fname
    raise ValueError(
        f"expected a path, bytes or a file-like object, got {type(src).__name__}"
    )


def _maybe_decompress(data: bytes | str, limits: Limits) -> bytes | str:
    """gzip/bz2 content decompressed (every member), never past ``limits.max_bytes``."""
    if not isinstance(data, bytes) or not (data[:2] == b"\x1f\x8b" or data[:3] == b"BZh"):
        return data
    kind = "gzip" if data[:2] == b"\x1f\x8b" else "bz2"
    new = (lambda: zlib.decompressobj(31)) if kind == "gzip" else bz2.BZ2Decompressor
    parts: list[bytes] = []
    size, rest = 0, data
    try:
        while rest:
            d = new()
            chunk = d.decompress(rest, limits.max_bytes + 1 - size)
            size += len(chunk)
            parts.append(chunk)
            if size > limits.max_bytes:
                limits.check("max_bytes", size, "the decompressed size in bytes (at least)")
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            rest = d.unused_data
            if kind == "gzip" and rest and rest[:2] != b"\x1f\x8b":
                raise OSError("trailing bytes after the gzip stream")
            if kind == "bz2" and rest and rest[:3] != b"BZh":
                rest = b""  # bz2.decompress ignores what follows the last stream
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"the file looks compressed but could not be decompressed: {exc}") from exc
    return b"".join(parts)


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


# the line breaks of str.splitlines, so that _lines(text) yields what enumerate(text.splitlines(), 1) would
_LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of every line, lazily (no list of all lines)."""
    pos = number = 0
    for m in _LINE_BREAK.finditer(text):
        number += 1
        yield number, text[pos:m.start()]
        pos = m.end()
    if pos < len(text):
        yield number + 1, text[pos:]


def _cell_splitter(text: str) -> Callable[[int, str], list[str]]:
    """Split a line into stripped cells with the separator of the first non-blank line."""
    first = next((ln for _, ln in _lines(text) if ln.strip()), "")
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)  # None: runs of whitespace

    def split(number: int, line: str) -> list[str]:
        if delimiter is None:
            return line.split()
        try:
            cells = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as exc:
            raise ValueError(f"line {number} cannot be read as CSV ({exc}); is this a CSV file?") from None
        return [c.strip() for c in cells]
    return split


def _parse_csv(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Features, labels and (if there is a header) feature names of a CSV file.

    One pass over the lines fills a preallocated float64 matrix (its size checked against
    ``limits`` first), so a file costs about its dense matrix, not a list of its cells."""
    text = _to_text(data)
    split = _cell_splitter(text)
    n_lines = sum(1 for _, ln in _lines(text) if ln.strip())
    if not n_lines:
        raise ValueError("the file is empty: there are no rows to load")
    number0, line0 = next((n, ln) for n, ln in _lines(text) if ln.strip())
    first = split(number0, line0)
    width = len(first)
    if width < 2:
        raise ValueError(
            "each row needs at least two columns (features, then the label in the last column); "
            f"line {number0} has {width}. Is the separator a comma, semicolon or tab?"
        )
    limits.check("max_features", width - 1, "the number of feature columns")
    limits.check("max_points", n_lines - 1, "the number of rows")
    limits.check("max_dense_entries", (n_lines - 1) * (width - 1), "rows x feature columns")

    X = np.empty((n_lines, width - 1), dtype=np.float64)
    line_numbers = np.empty(n_lines, dtype=np.int64)
    labels: list[str] = []
    bad: list[tuple[int, int]] = []
    n_bad = 0
    converted = [True] * n_lines  # whether X[i] holds row i
    failed = False  # a data row (not the first) that is not numbers
    # header candidates: columns whose first cell is text, while every later cell is a number (or empty)
    text_over_numbers = {j for j in range(width) if first[j] != "" and not _is_number(first[j])}
    i = 0
    for number, line in _lines(text):
        if not line.strip():
            continue
        cells = first if i == 0 else split(number, line)
        line_numbers[i] = number
        if len(cells) != width:
            n_bad += 1
            if len(bad) < 5:
                bad.append((number, len(cells)))
        elif not bad:
            for j in [j for j in text_over_numbers if i and cells[j] != "" and not _is_number(cells[j])]:
                text_over_numbers.discard(j)
            labels.append(cells[-1])
            if not failed:
                try:
                    X[i] = np.array(cells[:-1], dtype=np.float64)
                except ValueError:
                    converted[i] = False
                    failed = i > 0
        i += 1
    if bad:
        listed = ", ".join(f"line {ln} has {n}" for ln, n in bad)
        raise ValueError(
            f"ragged rows: the first row has {width} columns but {listed}"
            f"{' (and more)' if n_bad > 5 else ''}. Every row must have the same number of "
            "columns (features, then the label)."
        )

    header = bool(text_over_numbers) or not any(_is_number(c) for c in first[:-1])
    if header:
        feature_names: list[str] | None = [c or f"column {j + 1}" for j, c in enumerate(first[:-1])]
        X, line_numbers, labels, converted = X[1:], line_numbers[1:], labels[1:], converted[1:]
        if not labels:
            raise ValueError("the file holds only a header row and no data")
    else:
        feature_names = None

    def column_label(j: int) -> str:
        if feature_names is not None:
            return f"column {j + 1} ({feature_names[j]!r})"
        return f"column {j + 1}"

    limits.check("max_points", len(labels), "the number of rows")
    if len(labels) < MIN_ROWS:
        raise ValueError(
            f"only {len(labels)} data row(s); at least {MIN_ROWS} are needed to split into "
            "train and test parts"
        )
    if failed or not all(converted):
        _non_numeric_error(text, split, header, column_label)
    _check_finite(X, line_numbers, column_label)

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


def _non_numeric_error(text: str, split: Callable[[int, str], list[str]], header: bool,
                       column_label: Callable[[int], str]) -> None:
    """Raise the error naming the non-numeric columns, else the empty cells (a second pass)."""
    text_cols: dict[int, tuple[int, int, str]] = {}
    empty: list[tuple[int, int, int]] = []
    rows = ((n, ln) for n, ln in _lines(text) if ln.strip())
    if header:
        next(rows)
    for i, (number, line) in enumerate(rows):
        for j, c in enumerate(split(number, line)[:-1]):
            if c == "":
                if len(empty) < 6:
                    empty.append((i, number, j))
            elif j not in text_cols and not _is_number(c):
                text_cols[j] = (i, number, c)
    if text_cols:
        parts = [
            f"{column_label(j)} (data row {i + 1}, file line {n}: {c!r})"
            for j, (i, n, c) in sorted(text_cols.items())[:5]
        ]
        raise ValueError(
            "non-numeric feature column(s): " + "; ".join(parts) + ". Features must be "
            "numbers: encode text columns as numbers or drop them. The label goes in the "
            "last column."
        )
    if empty:
        parts = [f"data row {i + 1} (file line {n}), {column_label(j)}" for i, n, j in empty[:5]]
        raise ValueError(
            f"missing values (empty cells) at {'; '.join(parts)}"
            f"{' and more' if len(empty) > 5 else ''}. Fill or drop those rows."
        )
    raise ValueError("some feature cells are not numbers numpy can read; features must be plain decimal numbers")


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


def _parse_libsvm(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a LIBSVM file; its declared size (points, largest index) is
    checked against ``limits`` before the dense matrix is made. Indices are 1-based unless
    index 0 occurs (then all are 0-based, with a warning when only some lines use 0)."""
    from scipy import sparse
    from sklearn.datasets import load_svmlight_file

    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        X, y = load_svmlight_file(io.BytesIO(raw), zero_based=True)
    except (OverflowError, MemoryError):
        raise ValueError(
            f"a feature index of the LIBSVM file is too large to read (over 2**31), and the limit is "
            f"{limits.max_features:,} features (Limits.max_features); check the file's indices."
        ) from None
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
    if X.nnz == 0:
        raise ValueError("the LIBSVM file holds labels but no 'index:value' features; is it a LIBSVM file?")
    if X.indices.min() > 0:  # 1-based (the format's own convention): what zero_based="auto" does
        X = sparse.csr_matrix((X.data, X.indices - 1, X.indptr), shape=(X.shape[0], X.shape[1] - 1))
    else:
        nonempty = np.diff(X.indptr) > 0  # indices are sorted within a row: index 0 comes first
        rows_with_0 = int(np.count_nonzero(X.indices[X.indptr[:-1][nonempty]] == 0))
        rows_with_any = int(np.count_nonzero(nonempty))
        if rows_with_0 < rows_with_any:
            warnings.warn(
                f"index 0 occurs in only {rows_with_0} of {rows_with_any} lines, so all indices were read as "
                "0-based (index 0 is the first feature); if the file is 1-based, fix the lines with index 0.",
                UserWarning, stacklevel=3,
            )
    limits.check("max_features", X.shape[1], "the number of features (the largest index)")
    limits.check("max_points", X.shape[0], "the number of points")
    limits.check("max_dense_entries", X.shape[0] * X.shape[1], "points x features")
    X = X.toarray()
    _check_finite(X, None, lambda j: f"feature {j + 1}")
    if not np.all(np.isfinite(y)):
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"the label of row {i + 1} is {y[i]}; labels must be finite numbers")
    return X, y
