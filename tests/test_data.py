"""Tests for arml_core.data: loaders, preprocessing, user files and download."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import shutil
import socket
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_svmlight_files
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle

from arml_core import data as D
from arml_core.data import (
    BUILTIN_DATASETS,
    FILE_DATASETS,
    IMAGE_SHAPES,
    Dataset,
    available_datasets,
    download,
    list_datasets,
    load_dataset,
    load_file,
    validate_for_k,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _check_dataset(d: Dataset) -> None:
    assert d.X_train.dtype == np.float64 and d.X_test.dtype == np.float64
    assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    assert d.X_train.ndim == 2 and d.X_test.ndim == 2
    assert d.X_train.shape[1] == d.X_test.shape[1] == d.n_features
    assert len(d.y_train) == len(d.X_train) and len(d.y_test) == len(d.X_test)
    assert d.n_classes == len(d.classes) >= 2
    # every class occurs in training, codes are 0..C-1
    np.testing.assert_array_equal(np.unique(d.y_train), np.arange(d.n_classes))
    assert d.y_test.min() >= 0 and d.y_test.max() < d.n_classes
    # train features in [0, 1]: min 0 and max 1 for every non-constant column
    lo, hi = d.X_train.min(0), d.X_train.max(0)
    np.testing.assert_allclose(lo, 0.0, atol=1e-12)
    const = np.ptp(d.X_train, axis=0) == 0
    np.testing.assert_allclose(hi[~const], 1.0, atol=1e-12)
    assert np.all(np.isfinite(d.X_train)) and np.all(np.isfinite(d.X_test))
    if d.image_shape is not None:
        assert int(np.prod(d.image_shape)) == d.n_features
    assert d.description and d.source


def _manual_scale(X_train_raw: np.ndarray, X_raw: np.ndarray) -> np.ndarray:
    lo, hi = X_train_raw.min(0), X_train_raw.max(0)
    rng = np.where(hi - lo == 0, 1.0, hi - lo)
    return (X_raw - lo) / rng


# --------------------------------------------------------------------------- #
# built-ins
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_loads(name):
    d = load_dataset(name)
    _check_dataset(d)
    assert d.name == name
    assert d.image_shape == IMAGE_SHAPES.get(name)
    assert not d.subsampled
    if name != "figure1":  # 70/30 stratified split
        n = len(d.y_train) + len(d.y_test)
        assert abs(len(d.y_test) - 0.3 * n) <= 1
        train_frac = np.bincount(d.y_train) / len(d.y_train)
        test_frac = np.bincount(d.y_test, minlength=d.n_classes) / len(d.y_test)
        np.testing.assert_allclose(train_frac, test_frac, atol=0.05)


def test_builtin_names_and_shapes():
    assert load_dataset("digits").image_shape == (8, 8)
    assert load_dataset("iris").feature_names[0].startswith("sepal")
    assert load_dataset("Breast_Cancer").name == "breast_cancer"
    assert set(BUILTIN_DATASETS) & set(FILE_DATASETS) == set()


def test_test_split_uses_train_scaler_iris():
    """Recompute the whole pipeline by hand for iris and compare."""
    bunch = load_iris()
    X_tr, X_te, y_tr, y_te = train_test_split(
        bunch.data, bunch.target, test_size=0.3, stratify=bunch.target, random_state=42
    )
    X_te_s, y_te_s = shuffle(X_te, y_te, random_state=42)
    d = load_dataset("iris", seed=42)
    np.testing.assert_allclose(d.X_train, _manual_scale(X_tr, X_tr), atol=1e-12)
    np.testing.assert_allclose(d.X_test, _manual_scale(X_tr, X_te_s), atol=1e-12)
    np.testing.assert_array_equal(d.classes[d.y_test], y_te_s)
    # the test split is not rescaled on its own: its range is not exactly [0, 1]
    assert not (np.allclose(d.X_test.min(0), 0) and np.allclose(d.X_test.max(0), 1))


def test_seed_determinism():
    a = load_dataset("moons", seed=3)
    b = load_dataset("moons", seed=3)
    c = load_dataset("moons", seed=4)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.X_train.shape == c.X_train.shape
    assert not np.array_equal(a.X_train, c.X_train)
    w1, w2 = load_dataset("wine", seed=1), load_dataset("wine", seed=2)
    assert not np.array_equal(w1.X_test, w2.X_test)


def test_subsampling_described_and_stratified():
    full = load_dataset("digits")
    d = load_dataset("digits", n_train=200, n_test=50, seed=42)
    _check_dataset(d)
    assert d.X_train.shape == (200, 64) and d.X_test.shape == (50, 64)
    assert d.subsampled
    assert "subsampled to 200 of 1257" in d.description
    assert "stratified" in d.description and "seed 42" in d.description
    assert "first 50 of 540" in d.description
    expected = np.bincount(full.y_train) / len(full.y_train) * 200
    assert np.all(np.abs(np.bincount(d.y_train) - expected) <= 1)
    # n_test keeps a prefix of the same shuffled test order
    f = load_dataset("digits", n_train=200, seed=42)
    np.testing.assert_array_equal(f.y_test[:50], d.y_test)
    # the scaler is fitted on the subsample: min/max of the subsample are 0/1
    assert np.allclose(d.X_train.min(0), 0)


def test_subsample_larger_than_available_uses_all():
    d = load_dataset("iris", n_train=10_000, n_test=10_000)
    assert d.X_train.shape == (105, 4) and d.X_test.shape == (45, 4)
    assert not d.subsampled
    assert "n_train=10000" in d.description and "only 105 training points" in d.description
    assert "only 45 test points" in d.description


@pytest.mark.parametrize("kw", [{"n_train": 0}, {"n_test": 0}, {"n_train": -5}, {"n_test": 2.5},
                                {"n_train": True}])
def test_bad_counts(kw):
    with pytest.raises(ValueError, match="n_t(rain|est)"):
        load_dataset("iris", **kw)


def test_n_train_below_class_count():
    with pytest.raises(ValueError, match="number of classes"):
        load_dataset("digits", n_train=5)


def test_figure1_layout_needs_a_metric():
    d = load_dataset("figure1")
    assert d.X_train.shape == (13, 2) and d.X_test.shape == (6, 2)
    assert d.feature_names == ["x", "y"]

    def nn_predict(M):
        diff = d.X_test[:, None, :] - d.X_train[None, :, :]
        dist = np.einsum("tnd,de,tne->tn", diff, M, diff)
        return d.y_train[dist.argmin(1)]

    euclid_errors = int((nn_predict(np.eye(2)) != d.y_test).sum())
    stretched_errors = int((nn_predict(np.diag([16.0, 1.0])) != d.y_test).sum())
    assert euclid_errors == 4
    assert stretched_errors == 0


def test_unknown_name_lists_names():
    with pytest.raises(ValueError, match="unknown data set 'nope'") as info:
        load_dataset("nope")
    for n in BUILTIN_DATASETS + FILE_DATASETS:
        assert n in str(info.value)


def test_validate_for_k():
    d = load_dataset("iris")
    assert validate_for_k(d, 11) == 11
    with pytest.raises(ValueError, match="odd"):
        validate_for_k(d, 4)
    with pytest.raises(ValueError, match="larger than class"):
        validate_for_k(d, 101)


# --------------------------------------------------------------------------- #
# file data sets: missing files, data dir resolution, synthetic files
# --------------------------------------------------------------------------- #
def test_missing_files_error_names_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("pendigits", data_dir=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, OSError)
    assert str(tmp_path / "pendigits" / "pendigits") in msg
    assert str(tmp_path / "pendigits" / "pendigits.t.bz2") in msg
    assert "python -m arml_core download pendigits" in msg
    assert "ARML_DATA_DIR" in msg
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)


def _write_libsvm_dir(root: Path, name: str, train: str, test: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / D._LIBSVM_FILES[name][0]).write_text(train)
    (root / name / D._LIBSVM_FILES[name][1]).write_text(test)


def test_list_datasets_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("ARML_DATA_DIR", str(tmp_path))
    status = list_datasets()
    assert set(status) == set(BUILTIN_DATASETS) | set(FILE_DATASETS)
    assert all(status[n] for n in BUILTIN_DATASETS)
    assert not any(status[n] for n in FILE_DATASETS)
    _write_libsvm_dir(tmp_path, "splice", "1 1:1 2:2\n-1 1:2 2:1\n", "1 1:1.5\n")
    assert list_datasets()["splice"] is True
    assert available_datasets() == list(BUILTIN_DATASETS) + ["splice"]
    d = load_dataset("splice", n_test=1)  # data_dir from the environment variable
    assert d.X_train.shape == (2, 60) and d.X_test.shape == (1, 60)
    np.testing.assert_array_equal(d.classes, [-1, 1])
    assert d.classes.dtype.kind == "i"
    np.testing.assert_allclose(d.X_test[0, :2], [0.5, -1.0])  # scaled with train min/max


def test_unseen_test_label_is_error(tmp_path):
    _write_libsvm_dir(tmp_path, "splice", "1 1:1\n-1 1:2\n1 1:3\n", "1 1:1\n3 1:2\n")
    with pytest.raises(ValueError, match=r"label\(s\) \[3\].*never occur in the training"):
        load_dataset("splice", data_dir=tmp_path)


def _gz_idx(path: Path, magic: int, dims: tuple[int, ...], body: bytes) -> None:
    path.write_bytes(gzip.compress(struct.pack(f">{1 + len(dims)}I", magic, *dims) + body))


def test_idx_magic_and_size_checked(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1], dtype=np.uint8)
    _gz_idx(folder / "train-images-idx3-ubyte.gz", 2051, (6, 28, 28), imgs.tobytes())
    _gz_idx(folder / "train-labels-idx1-ubyte.gz", 2049, (6,), labels.tobytes())
    _gz_idx(folder / "t10k-images-idx3-ubyte.gz", 2051, (2, 28, 28), imgs[:2].tobytes())
    _gz_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049, (2,), labels[:2].tobytes())
    d = load_dataset("mnist", data_dir=tmp_path)
    assert d.X_train.shape == (6, 784) and d.image_shape == (28, 28)
    # wrong magic (labels file where images are expected)
    _gz_idx(folder / "t10k-images-idx3-ubyte.gz", 2049, (2, 28, 28), imgs[:2].tobytes())
    with pytest.raises(ValueError, match="magic number 2049.*2051"):
        load_dataset("mnist", data_dir=tmp_path)
    # truncated body
    _gz_idx(folder / "t10k-images-idx3-ubyte.gz", 2051, (2, 28, 28), imgs[:1].tobytes())
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path)
    # images and labels disagree in count
    _gz_idx(folder / "t10k-images-idx3-ubyte.gz", 2051, (1, 28, 28), imgs[:1].tobytes())
    with pytest.raises(ValueError, match="1 images but the t10k labels file holds 2"):
        load_dataset("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------- #
# the shared benchmark data
# --------------------------------------------------------------------------- #
LIBSVM_SHAPES = {
    "splice": (1000, 2175, 60, [-1, 1]),
    "pendigits": (7494, 3498, 16, list(range(10))),
    "satimage": (4435, 2000, 36, list(range(1, 7))),
    "usps": (7291, 2007, 256, list(range(1, 11))),
}


@pytest.mark.parametrize("name", list(LIBSVM_SHAPES))
def test_shared_libsvm_shapes(shared_data_dir, name):
    n_tr, n_te, n_feat, classes = LIBSVM_SHAPES[name]
    d = load_dataset(name, data_dir=shared_data_dir)
    _check_dataset(d)
    assert d.X_train.shape == (n_tr, n_feat) and d.X_test.shape == (n_te, n_feat)
    np.testing.assert_array_equal(d.classes, classes)
    assert d.image_shape == IMAGE_SHAPES.get(name)
    if name == "pendigits":
        np.testing.assert_array_equal(
            np.bincount(d.y_train), [780, 779, 780, 719, 780, 720, 720, 778, 719, 719]
        )
        np.testing.assert_array_equal(
            np.bincount(d.y_test), [363, 364, 364, 336, 364, 335, 336, 364, 336, 336]
        )
    if name in ("splice", "usps"):
        assert "reconstruct" in d.description


def _idx_header(path: Path) -> tuple[int, ...]:
    with gzip.open(path, "rb") as fh:
        magic = struct.unpack(">I", fh.read(4))[0]
        ndim = magic & 0xFF
        return (magic,) + struct.unpack(f">{ndim}I", fh.read(4 * ndim))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shared_idx_datasets(shared_data_dir, name):
    folder = shared_data_dir / name
    assert _idx_header(folder / "train-images-idx3-ubyte.gz") == (2051, 60000, 28, 28)
    assert _idx_header(folder / "train-labels-idx1-ubyte.gz") == (2049, 60000)
    assert _idx_header(folder / "t10k-images-idx3-ubyte.gz") == (2051, 10000, 28, 28)
    assert _idx_header(folder / "t10k-labels-idx1-ubyte.gz") == (2049, 10000)
    d = load_dataset(name, data_dir=shared_data_dir, n_train=1000)
    _check_dataset(d)
    assert d.X_train.shape == (1000, 784) and d.X_test.shape == (10000, 784)
    assert d.image_shape == (28, 28)
    np.testing.assert_array_equal(d.classes, np.arange(10))
    assert "subsampled to 1000 of 60000" in d.description
    counts = np.bincount(d.y_test)
    if name == "fashion-mnist":
        assert np.all(counts == 1000)
    else:
        np.testing.assert_array_equal(
            counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        )


@pytest.mark.parametrize("name", ["splice", "pendigits", "satimage"])
def test_shared_first_1000_is_paper_protocol(shared_data_dir, name):
    train, test, n_feat = D._LIBSVM_FILES[name]
    X_tr, y_tr, X_te, y_te = load_svmlight_files(
        [str(shared_data_dir / name / train), str(shared_data_dir / name / test)],
        n_features=n_feat,
    )
    X_tr, X_te = X_tr.toarray(), X_te.toarray()
    X_sel, y_sel = shuffle(X_te, y_te, random_state=42)
    X_sel, y_sel = X_sel[:1000], y_sel[:1000]
    d = load_dataset(name, data_dir=shared_data_dir, n_test=1000, seed=42)
    np.testing.assert_allclose(d.X_test, _manual_scale(X_tr, X_sel), atol=1e-12)
    np.testing.assert_array_equal(d.classes[d.y_test], y_sel)
    np.testing.assert_allclose(d.X_train, _manual_scale(X_tr, X_tr), atol=1e-12)


def test_registry_checksums_match_shared_files(shared_data_dir):
    """The sha256 values typed into the registry equal the publisher-exact shared files."""
    reconstructed = {("usps", "usps.bz2")}  # the official digest differs by design
    checked = 0
    for name, files in D._REMOTE.items():
        for remote in files:
            path = shared_data_dir / name / remote.filename
            if remote.algorithm != "sha256" or (name, remote.filename) in reconstructed:
                continue
            assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.digest, path
            checked += 1
    assert checked == 13


# --------------------------------------------------------------------------- #
# load_file
# --------------------------------------------------------------------------- #
CSV_ROWS = [
    (0.0, 10.0, "a"), (1.0, 12.0, "a"), (2.0, 11.0, "a"), (3.0, 13.0, "a"),
    (5.0, 20.0, "b"), (6.0, 22.0, "b"), (7.0, 21.0, "b"), (8.0, 25.0, "b"),
    (4.0, 15.0, "c"), (4.5, 16.0, "c"), (3.5, 17.0, "c"), (4.2, 18.0, "c"),
]


def _csv_text(header=True, sep=","):
    lines = [sep.join(["width", "height", "kind"])] if header else []
    lines += [sep.join([str(a), str(b), c]) for a, b, c in CSV_ROWS]
    return "\n".join(lines) + "\n"


def test_load_csv_with_header_from_path(tmp_path):
    path = tmp_path / "shapes.csv"
    path.write_text(_csv_text(header=True))
    d = load_file(path, test_size=0.25)
    _check_dataset(d)
    assert d.name == "shapes"
    assert d.feature_names == ["width", "height"]
    assert list(d.classes) == ["a", "b", "c"]
    assert d.X_train.shape == (9, 2) and d.X_test.shape == (3, 2)
    np.testing.assert_array_equal(np.bincount(d.y_test), [1, 1, 1])  # stratified
    assert "shapes.csv" in d.description and "25%" in d.description


def test_load_csv_without_header_bytesio_and_text():
    d1 = load_file(io.BytesIO(_csv_text(header=False).encode()), seed=1)
    d2 = load_file(io.StringIO(_csv_text(header=False)), seed=1)
    d3 = load_file(_csv_text(header=False, sep=";").encode(), seed=1)
    d4 = load_file(io.BytesIO(_csv_text(header=False, sep="\t").encode()), seed=1)
    for d in (d1, d2, d3, d4):
        _check_dataset(d)
        assert d.feature_names is None
        assert len(d.y_train) + len(d.y_test) == 12
        np.testing.assert_array_equal(d.X_train, d1.X_train)


def test_load_csv_scaling_matches_manual_and_constant_feature():
    rows = [(i, 7.0, i % 2) for i in range(10)]
    text = "\n".join(f"{a},{b},{c}" for a, b, c in rows)
    d = load_file(io.BytesIO(text.encode()), test_size=0.4, seed=0)
    np.testing.assert_array_equal(d.X_train[:, 1], 0.0)  # constant column -> 0
    np.testing.assert_array_equal(d.X_test[:, 1], 0.0)
    np.testing.assert_array_equal(d.classes, [0, 1])
    # column 0 holds 0..9: train and test scaled by ONE affine map (the train scaler),
    # so all scaled values together are still equally spaced
    assert d.X_train[:, 0].min() == 0.0 and d.X_train[:, 0].max() == 1.0
    both = np.sort(np.concatenate([d.X_train[:, 0], d.X_test[:, 0]]))
    np.testing.assert_allclose(np.diff(both), np.diff(both)[0])
    assert both.min() < 0 or both.max() > 1  # a test point lies outside the train range


def test_load_libsvm_path_and_bytesio(tmp_path):
    lines = [f"{i % 2} 1:{i} 3:{(i * 7) % 5}" for i in range(12)]
    text = "\n".join(lines) + "\n"
    path = tmp_path / "toy.libsvm"
    path.write_text(text)
    d1 = load_file(path)
    d2 = load_file(io.BytesIO(text.encode()))  # no name: format guessed from content
    d3 = load_file(io.BytesIO(text.encode()), fmt="libsvm")
    for d in (d1, d2, d3):
        _check_dataset(d)
        assert d.n_features == 3
        assert d.n_train + d.n_test == 12
    np.testing.assert_array_equal(d1.X_test, d2.X_test)
    assert "LIBSVM" in d1.description


def test_uploaded_file_like_with_name():
    buf = io.BytesIO(_csv_text().encode())
    buf.name = "upload.csv"
    buf.read()  # a consumed buffer is rewound
    d = load_file(buf)
    assert d.name == "upload" and d.feature_names == ["width", "height"]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"x,y,label\n", "only a header"),
        (b"1,2,a\n3,nan,b\n5,6,a\n7,8,b\n", r"NaN or infinite.*data row 2 \(file line 2\), column 2"),
        (b"f1,f2,y\n1,2,a\n3,4,b\n5,inf,a\n7,8,b\n",
         r"data row 3 \(file line 4\), column 2 \('f2'\): inf"),
        (b"1,red,a\n3,blue,b\n5,red,a\n7,red,b\n", r"non-numeric.*column 2"),
        (b"size,color,y\n1,red,a\n3,blue,b\n5,red,a\n7,red,b\n", r"column 2 \('color'\)"),
        (b"1,2,a\n3,4,b\n5,6\n7,8,b\n", r"ragged.*line 3 has 2"),
        (b"1,2,a\n3,,b\n5,6,a\n7,8,b\n", r"missing values.*data row 2"),
        (b",2,a\n3,4,b\n5,6,a\n7,8,b\n", r"missing values.*data row 1 \(file line 1\), column 1"),
        (b"1,2,a\n3,4,a\n5,6,a\n7,8,a\n", r"single class"),
        (b"1,2,a\n3,4,a\n5,6,a\n7,8,b\n", r"class\(es\) 'b' have only 1 point"),
        (b"1,2,a\n3,4,b\n5,6,a\n", r"only 3 data row"),
        (b"1\n2\n3\n4\n", "at least two columns"),
        (b"1,2,a\n3,4,\n5,6,a\n7,8,b\n", "missing label"),
    ],
)
def test_load_file_bad_csv(content, match):
    with pytest.raises(ValueError, match=match):
        load_file(io.BytesIO(content), fmt="csv")


def test_load_file_bad_libsvm_and_args():
    with pytest.raises(ValueError, match="could not parse the file as LIBSVM"):
        load_file(io.BytesIO(b"1 1:2 x:y\n0 2:3\n1 1:1\n0 1:5\n"), fmt="libsvm")
    with pytest.raises(ValueError, match="single class"):
        load_file(io.BytesIO(b"1 1:2\n1 1:3\n1 1:4\n1 1:5\n"), fmt="libsvm")
    with pytest.raises(ValueError, match="fmt must be"):
        load_file(io.BytesIO(_csv_text().encode()), fmt="xlsx")
    with pytest.raises(ValueError, match="test_size"):
        load_file(io.BytesIO(_csv_text().encode()), test_size=1.5)
    with pytest.raises(ValueError, match="stratified"):
        load_file(io.BytesIO(_csv_text().encode()), test_size=0.1)  # 2 test rows, 3 classes
    with pytest.raises(FileNotFoundError):
        load_file("/nonexistent/file.csv")


# --------------------------------------------------------------------------- #
# download, served from a local HTTP server
# --------------------------------------------------------------------------- #
class _Server:
    def __init__(self, directory: Path):
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                log.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(directory: Path) -> _Server:
        servers.append(_Server(directory))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_pendigits_from_mirror(shared_data_dir, tmp_path, serve):
    server = serve(shared_data_dir)
    seen = []
    target = tmp_path / "target"
    paths = download("pendigits", target, mirror=server.url,
                     progress=lambda done, total, fn: seen.append((done, total, fn)))
    assert paths == [target / "pendigits" / "pendigits", target / "pendigits" / "pendigits.t"]
    for p in paths:
        assert p.read_bytes() == (shared_data_dir / "pendigits" / p.name).read_bytes()
    assert sorted(f.name for f in (target / "pendigits").iterdir()) == ["pendigits", "pendigits.t"]
    assert server.requests == ["/pendigits/pendigits", "/pendigits/pendigits.t"]
    last = [s for s in seen if s[2] == "pendigits"][-1]
    assert last[0] == last[1] == (shared_data_dir / "pendigits" / "pendigits").stat().st_size
    d = load_dataset("pendigits", data_dir=target, n_test=1000)
    assert d.X_train.shape == (7494, 16) and d.X_test.shape == (1000, 16)

    # second call: both files present and verified -> no request at all
    assert download("pendigits", target, mirror=server.url) == paths
    assert len(server.requests) == 2
    # overwrite forces a fresh download
    download("pendigits", target, mirror=server.url, overwrite=True)
    assert len(server.requests) == 4
    # a corrupted local copy is fetched again
    paths[1].write_bytes(b"garbage")
    download("pendigits", target, mirror=server.url)
    assert server.requests[-1] == "/pendigits/pendigits.t" and len(server.requests) == 5
    assert paths[1].read_bytes() == (shared_data_dir / "pendigits" / "pendigits.t").read_bytes()


def test_download_tampered_leaves_nothing(shared_data_dir, tmp_path, serve):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data_dir / "pendigits", mirror / "pendigits")
    tampered = mirror / "pendigits" / "pendigits"
    data = bytearray(tampered.read_bytes())
    data[10] = ord("9") if data[10] != ord("9") else ord("8")
    tampered.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    server = serve(mirror)
    target = tmp_path / "target"
    with pytest.raises(ValueError, match="checksum mismatch for pendigits") as info:
        download("pendigits", target, mirror=server.url)
    assert actual in str(info.value)
    assert D._REMOTE["pendigits"][0].digest in str(info.value)
    assert list((target / "pendigits").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        load_dataset("pendigits", data_dir=target)

    # only the second file tampered: the verified first one stays, nothing else
    shutil.copy(shared_data_dir / "pendigits" / "pendigits", tampered)
    (mirror / "pendigits" / "pendigits.t").write_bytes(b"8 1:1\n")
    with pytest.raises(ValueError, match="pendigits.t"):
        download("pendigits", target, mirror=server.url)
    assert [f.name for f in (target / "pendigits").iterdir()] == ["pendigits"]


def test_download_unverifiable_splice_t_warns(shared_data_dir, tmp_path, serve):
    server = serve(shared_data_dir)
    sha = hashlib.sha256((shared_data_dir / "splice" / "splice.t").read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match=f"could not be verified.*{sha}"):
        download("splice", tmp_path, mirror=server.url)
    assert (tmp_path / "splice" / "splice.t").read_bytes() == (
        shared_data_dir / "splice" / "splice.t"
    ).read_bytes()
    # present now: kept without a new request or warning
    n = len(server.requests)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        download("splice", tmp_path, mirror=server.url)
    assert len(server.requests) == n


def test_download_network_errors(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    server = serve(empty)
    with pytest.raises(OSError, match=r"could not download http://127\.0\.0\.1.*/usps/usps\.bz2.*404"):
        download("usps", tmp_path / "t", mirror=server.url)
    assert list((tmp_path / "t" / "usps").iterdir()) == []
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError, match=f"could not download http://127.0.0.1:{port}/mnist/"):
        download("mnist", tmp_path / "t", mirror=f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(ValueError, match="cannot download 'iris'"):
        download("iris", tmp_path)
