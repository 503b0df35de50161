"""Readers: the files of the paper's data sets and users' files, parsed into raw splits.

A reader returns a :class:`_Raw` (the unprocessed train/test splits and the head of
their description) or the arrays of a user's file; ``prepare`` then applies the paper's
preprocessing. Formats: LIBSVM (``label index:value ...``, through scikit-learn's
svmlight reader), IDX (MNIST, Fashion-MNIST; unsigned bytes, magic number and size
checked), CSV (the label in the last column, separator and header detected), each
optionally ``.gz``/``.bz2`` compressed; :func:`_guess_format` tells LIBSVM from CSV by
the file name, else the content. Every malformed input is a ``ValueError`` saying what
to fix.

See ``ARML_NOTES.md`` sections 1 and 9 for the data sets and their files.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np

from .sources import (IMAGE_SHAPES, _KNOWN_VARIANTS, _LIBSVM_FILES, _SOURCES, _file_digest, _find_files,
                      _missing_files_error)

#: Fewest rows :func:`load_file` accepts.
MIN_ROWS = 4


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
