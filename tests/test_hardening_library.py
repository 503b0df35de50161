"""Hardening of the library's inputs: limits checked before allocating, untrusted .npz read
header first, metric range and complex checks, a cache that trusts nothing, downloads that
are capped and leave nothing behind, and property tests over malformed bytes."""
from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arml_core import limits as L
from arml_core.data import dataset_status, download, list_datasets, load_dataset, load_file
from arml_core.data import sources as S
from arml_core.limits import Limits, estimate_fit_seconds
from arml_core.metric import check_components, check_metric, components_from_metric, metric_from_components
from arml_core.persistence import (cached_metric, load_metric, load_npy, metric_to_bytes, run_key, save_metric,
                                   store_metric)

ROOT = Path(__file__).resolve().parents[1]
G4 = np.diag([1.0, 2.0, 0.5, 1.5])


def peak_mb(fn, *args, **kw):
    """(result or the exception raised, peak traced MB)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001
            out = exc
        return out, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_bomb(shape=(12000, 12000)) -> bytes:
    """~1 MB of deflated zeros whose header declares ``shape`` float64 (1.15 GB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("components.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
            left, block = int(np.prod(shape)) * 8, bytes(1 << 22)
            while left > 0:
                f.write(block[:min(left, len(block))])
                left -= len(block)
    return buf.getvalue()


# --------------------------------------------------------------------------- LIBSVM and CSV limits
def test_libsvm_huge_index_refused_before_allocating():
    text = b"1 1:1\n0 30000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n"
    t0 = time.perf_counter()
    exc, mb = peak_mb(load_file, io.BytesIO(text), fmt="libsvm")
    assert isinstance(exc, ValueError) and time.perf_counter() - t0 < 5 and mb < 50
    assert "30,000,000" in str(exc) and "Limits.max_features" in str(exc) and "--max-features" in str(exc)
    for index in (2_500_000_000, 3_000_000_000, 10**20):
        with pytest.raises(ValueError, match="too large|over the limit"):
            load_file(io.BytesIO(b"1 1:1\n0 %d:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n" % index), fmt="libsvm")
    ds = load_file(io.BytesIO(b"1 1:1\n0 30:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n"), fmt="libsvm",
                   limits=Limits(max_features=30))
    assert ds.n_features == 30


def test_libsvm_mixed_bases_warn_and_no_features_refused():
    mixed = b"1 0:1 2:1\n0 1:2 2:3\n1 1:1 3:1\n0 1:5\n1 2:2\n0 2:1\n"
    with pytest.warns(UserWarning, match=r"index 0 occurs in only 1 of 6 lines.*0-based"):
        ds = load_file(io.BytesIO(mixed), fmt="libsvm")
    assert ds.n_features == 4  # read as before: 0-based
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0-based file that uses index 0 on every line: no warning
        load_file(io.BytesIO(b"1 0:1\n0 0:2\n1 0:1 1:1\n0 0:5\n1 0:2\n0 0:1\n"), fmt="libsvm")
    with pytest.raises(ValueError, match="no 'index:value' features"):
        load_file(io.BytesIO(b"1\n0\n1\n0\n1\n0\n"), fmt="libsvm")


def test_data_folder_overflow_and_idx_bombs(tmp_path):
    (tmp_path / "splice").mkdir()
    (tmp_path / "splice" / "splice").write_bytes(b"1 3000000000:1\n-1 1:1\n")
    (tmp_path / "splice" / "splice.t").write_bytes(b"1 1:1\n")
    with pytest.raises(ValueError, match="could not read the LIBSVM files"):
        load_dataset("splice", data_dir=tmp_path)
    from arml_core.data.readers import _read_idx

    p = tmp_path / "i.gz"
    p.write_bytes(gzip.compress(np.array([2051, 2**31, 2**31, 2**31], ">u4").tobytes()))
    with pytest.raises(ValueError, match="announces .* more than"):
        _read_idx(p, 2051, 3)
    p.write_bytes(gzip.compress(np.array([2051, 2, 2, 2], ">u4").tobytes() + bytes(10_000)))
    with pytest.raises(ValueError, match="holds more"):
        _read_idx(p, 2051, 3)


def csv_rows(n, d):
    return "".join(",".join(str((i * 7 + j) % 10) for j in range(d)) + f",{'ab'[i % 2]}\n" for i in range(n)).encode()


def test_csv_limits_and_how_to_raise_them(tmp_path):
    wide = csv_rows(10, 50)
    with pytest.raises(ValueError, match=r"feature columns is 50, over the limit of 20 .*--max-features"):
        load_file(io.BytesIO(wide), limits=Limits(max_features=20))
    assert load_file(io.BytesIO(wide)).n_features == 50
    with pytest.raises(ValueError, match="Limits.max_points"):
        load_file(io.BytesIO(csv_rows(30, 2)), limits=Limits(max_points=20))
    with pytest.raises(ValueError, match="Limits.max_dense_entries"):
        load_file(io.BytesIO(csv_rows(30, 5)), limits=Limits(max_dense_entries=100))
    path = tmp_path / "x.csv"
    path.write_bytes(csv_rows(30, 5))
    for src in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        with pytest.raises(ValueError, match="Limits.max_bytes"):
            load_file(src, limits=Limits(max_bytes=100))
    previous = L.set_default_limits(max_features=3)
    try:
        with pytest.raises(ValueError, match="over the limit of 3"):
            load_file(path)
    finally:
        L.set_default_limits(previous)
    assert L.get_limits() == previous
    with pytest.raises(ValueError, match="positive integer"):
        Limits(max_points=0)


def test_gzip_bomb_and_huge_field_are_clear_errors():
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as g:
        for _ in range(100):
            g.write(b"0,1,0\n" * 174763)  # 100 MiB of rows
    exc, mb = peak_mb(load_file, io.BytesIO(buf.getvalue()))
    assert isinstance(exc, ValueError) and "decompressed size" in str(exc) and mb < 120
    with pytest.raises(ValueError, match="cannot be read as CSV"):
        load_file(io.BytesIO(b"1" * 200_000 + b",2,a\n3,4,b\n5,6,a\n7,8,b\n"))
    with pytest.raises(ValueError, match="could not be decompressed"):
        load_file(io.BytesIO(gzip.compress(csv_rows(12, 2))[:-20]))
    assert load_file(io.BytesIO(gzip.compress(csv_rows(6, 2)) + gzip.compress(csv_rows(6, 2)))).n_train > 0


def test_streamed_csv_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).round(6)
    text = "h1;h2;h3;label\n" + "".join(";".join(map(repr, r.tolist())) + f";c{i % 3}\r\n" for i, r in enumerate(X))
    from arml_core.data.readers import _parse_csv

    Xp, y, names = _parse_csv(text.encode())
    np.testing.assert_array_equal(Xp, X)
    assert names == ["h1", "h2", "h3"] and list(y[:3]) == ["c0", "c1", "c2"]


# --------------------------------------------------------------------------- metric files and metrics
def test_npz_zip_bomb_refused_from_its_header(tmp_path):
    bomb = npz_bomb()
    assert len(bomb) < 2_000_000
    exc, mb = peak_mb(load_metric, io.BytesIO(bomb))
    assert isinstance(exc, ValueError) and "Limits.max_features" in str(exc) and mb < 20
    exc, mb = peak_mb(load_metric, io.BytesIO(bomb), n_features=4)
    assert isinstance(exc, ValueError) and "for 12000 features" in str(exc) and mb < 20
    with open(tmp_path / "m.npy", "wb") as f:  # a header declaring 5000 x 5000 over a few bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (5000, 5000)})
        f.write(bytes(64))
    with pytest.raises(ValueError, match="Limits.max_features"):
        load_npy(tmp_path / "m.npy")
    np.save(tmp_path / "ok.npy", G4)
    np.testing.assert_array_equal(load_npy(tmp_path / "ok.npy", n_features=4), G4)


@pytest.mark.parametrize("G, meta, match", [
    (G4 * (1 + 1j), None, "complex"),
    (1e160 * np.eye(4), None, r"largest entry, 1e\+320, is outside"),
    (1e-170 * np.eye(4), None, r"largest entry, 1e-340"),
    (np.array([["a"] * 4] * 4), None, "real numbers"),
    (G4, [1, 2], "not an object"),
    (G4, "text", "not an object"),
])
def test_metric_file_contents_checked(G, meta, match):
    arrays = {"components": G}
    if meta is not None:
        arrays["metadata"] = np.array(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        load_metric(io.BytesIO(npz_bytes(**arrays)), n_features=4)


def test_metric_file_variants_that_load():
    for G in (G4.astype(np.float16), G4.astype(">f8"), np.asfortranarray(G4), (2 * G4).astype(np.int64) / 2):
        got, meta = load_metric(io.BytesIO(npz_bytes(components=G, metadata=np.array("{}"))), n_features=4)
        np.testing.assert_array_equal(got, G4)
    got, _ = load_metric(io.BytesIO(npz_bytes(components=np.eye(4, dtype=np.int32))))
    assert got.dtype == np.float64 and np.array_equal(got, np.eye(4))
    with pytest.raises(ValueError, match=r"\.npy file, not an \.npz"):
        buf = io.BytesIO()
        np.save(buf, G4)
        load_metric(io.BytesIO(buf.getvalue()))
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for i in range(20):
            z.writestr(f"x{i}.npy", b"")
    with pytest.raises(ValueError, match="more than 16 members"):
        load_metric(io.BytesIO(many.getvalue()))


def test_check_metric_complex_and_range_rule():
    with pytest.raises(ValueError, match="complex"):
        check_metric(np.eye(3) * (1 + 1j))
    with pytest.raises(ValueError, match="complex"):
        components_from_metric(np.eye(3) * 1j)
    with pytest.raises(ValueError, match="complex"):
        metric_from_components(np.eye(3) * (1 + 2j))
    for scale in (1e200, 1e-320):
        with pytest.raises(ValueError, match="outside the range"):
            check_metric(scale * np.eye(3))
    upper = 1e100 / (3**2 * 2.0**2)
    check_metric(0.99 * upper * np.eye(3))
    with pytest.raises(ValueError, match="outside"):
        check_metric(1.01 * upper * np.eye(3))
    M = np.array([[2.0, 1.0], [1.0, 2.0 + 1e-12]])
    np.testing.assert_array_equal(check_metric(M), 0.5 * (M + M.T))  # unchanged for valid input
    np.testing.assert_array_equal(check_metric(np.zeros((2, 2))), np.zeros((2, 2)))
    np.testing.assert_array_equal(check_components(G4), G4)
    with pytest.raises(ValueError, match="1e\\+320"):
        check_components(1e160 * np.eye(2))


def test_save_metric_refuses_bad_components_and_foreign_json(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        save_metric(tmp_path / "a.npz", np.full((2, 2), np.nan), dataset="d", method="m")
    with pytest.raises(ValueError, match="complex"):
        save_metric(tmp_path / "a.npz", G4 * 1j, dataset="d", method="m")
    (tmp_path / "notes.json").write_text('{"my": "notes"}')
    with pytest.raises(ValueError, match="would overwrite .*notes.json"):
        save_metric(tmp_path / "notes.npz", G4, dataset="d", method="m")
    assert (tmp_path / "notes.json").read_text() == '{"my": "notes"}' and not (tmp_path / "notes.npz").exists()
    save_metric(tmp_path / "m.npz", G4, dataset="d", method="m")
    save_metric(tmp_path / "m.npz", 2 * G4, dataset="d", method="m")  # its own sidecar is replaced
    np.testing.assert_array_equal(load_metric(tmp_path / "m.npz")[0], 2 * G4)


SETTINGS = {"n_train": 0, "seed": 42}


@pytest.mark.parametrize("change, reason", [
    ({"_raw": [1, 2]}, "not an object"),
    ({"fit_time_s": "abc"}, "fit_time_s"),
    ({"fit_time_s": [1]}, "fit_time_s"),
    ({"fit_time_s": True}, "fit_time_s"),
    ({"info": [1]}, "info"),
    ({"method": "lfda"}, "method 'lfda'"),
    ({"dataset": "wine"}, "dataset 'wine'"),
    ({"params": {"n_train": 5, "seed": 42}}, "params"),
])
def test_cached_metric_trusts_nothing(tmp_path, change, reason):
    store_metric(tmp_path, "iris", "arml", SETTINGS, G4, 1.0)
    path = tmp_path / (run_key("iris", "arml", SETTINGS) + ".npz")
    assert cached_metric(tmp_path, "iris", "arml", SETTINGS, 4) is not None
    meta = {"format_version": 1, "dataset": "iris", "method": "arml", "params": SETTINGS, "fit_time_s": 1.0,
            "info": {}}
    meta.update(change)
    path.write_bytes(npz_bytes(components=G4, metadata=np.array(json.dumps(meta.pop("_raw", meta)))))
    with pytest.warns(UserWarning, match=f"ignoring the saved run .*{reason}"):
        assert cached_metric(tmp_path, "iris", "arml", SETTINGS, 4) is None


# --------------------------------------------------------------------------- download and listing
class _Handler(http.server.BaseHTTPRequestHandler):
    endless: set = set()
    delay = 0.0
    lie: int | None = None
    root: Path = Path(".")

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        data = None if name in self.endless else (self.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        if data is not None:
            self.send_header("Content-Length", str(self.lie or len(data)))
        self.end_headers()
        try:
            for i in range(0, 200 << 20, 1 << 16):
                block = bytes(1 << 16) if data is None else data[i:i + (1 << 16)]
                if not block:
                    break
                self.wfile.write(block)
                time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    servers = []

    def start(files: dict[str, bytes], **attrs):
        for rel, data in files.items():
            (tmp_path / "mirror" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "mirror" / rel).write_bytes(data)
        handler = type("H", (_Handler,), {"root": tmp_path / "mirror", **attrs})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def parts(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.part")]


def test_download_capped_by_the_published_size(tmp_path, mirror, monkeypatch):
    url = mirror({"pendigits/pendigits": b"x"}, endless={"pendigits"})
    with pytest.raises(OSError, match="more than the 589,456 bytes of the published file"):
        download("pendigits", tmp_path / "d", mirror=url)
    assert parts(tmp_path / "d") == []
    url = mirror({"pendigits/pendigits": b"1 1:1\n"}, lie=10**9)
    with pytest.raises(OSError, match="announces 1,000,000,000 bytes"):
        download("pendigits", tmp_path / "d", mirror=url)
    monkeypatch.setattr(S, "UNKNOWN_SIZE_CAP", 1 << 20)
    monkeypatch.setitem(S._REMOTE, "splice", (S._REMOTE["splice"][1],))  # splice.t alone: no size, no checksum
    url = mirror({"splice/splice.t": b"x"}, endless={"splice.t"})
    with pytest.raises(OSError, match="1,048,576 bytes allowed for a file of unknown size"):
        download("splice", tmp_path / "d", mirror=url)
    assert parts(tmp_path / "d") == []


def test_download_interrupted_leaves_no_partial_file(tmp_path, mirror):
    url = mirror({"pendigits/pendigits": bytes(500_000)}, delay=0.01)
    before = signal.getsignal(signal.SIGTERM)

    def interrupt(done, total, name):
        if done > 100_000:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        download("pendigits", tmp_path / "d", mirror=url, progress=interrupt)
    assert parts(tmp_path / "d") == [] and signal.getsignal(signal.SIGTERM) == before
    # SIGTERM in a process of its own: the temporary handler raises, the partial file goes
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from arml_core.data import download; "
            f"download('pendigits', {str(tmp_path / 'e')!r}, mirror={url!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not parts(tmp_path / "e") and time.time() < deadline:
        time.sleep(0.05)
    assert parts(tmp_path / "e"), "the download never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert parts(tmp_path / "e") == [] and "Traceback" not in proc.stderr.read()


def test_registry_sizes_match_the_shared_files(shared_data_dir):
    for name, remotes in S._REMOTE.items():
        for r in remotes:
            p = shared_data_dir / name / r.filename
            if r.size is not None and p.is_file() and S._file_digest(p, r.algorithm) == r.digest:
                assert p.stat().st_size == r.size, (name, r.filename)


def test_status_says_unverified(tmp_path):
    (tmp_path / "splice").mkdir()
    (tmp_path / "splice" / "splice").write_text("1 1:1\n-1 1:2\n")
    (tmp_path / "splice" / "splice.t").write_text("1 1:1\n")
    status = dataset_status(tmp_path)
    assert status["splice"] == "available (unverified: no published checksum for splice.t)"
    assert status["iris"] == "available" and status["mnist"].startswith("missing")
    assert list_datasets(tmp_path)["splice"] is True


# --------------------------------------------------------------------------- the cost model
def test_estimate_fit_seconds_is_a_monotone_positive_model():
    for m in ("euclidean", "nca", "lmnn", "itml", "lfda", "arml"):
        small, more_n, more_d = (estimate_fit_seconds(m, n, d) for n, d in ((100, 4), (1000, 4), (100, 64)))
        assert 0 < small <= more_n and small <= more_d, m
    assert estimate_fit_seconds("lmnn", 10, 5000) > 60  # the 4-minute upload of the issue is flagged
    assert estimate_fit_seconds("arml:saved", 100, 4) == 0.0


# --------------------------------------------------------------------------- property tests
BUDGET_MB = 40  # every example below is at most a few kB; a load may not trace more than this

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
cell = st.one_of(st.integers(-5, 1000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.sampled_from(["", "a", "nan", " ", '"', "1e400", "x,y", "\x00", "\xe9", "0x1"]))


def assert_clear_or_loaded(fn, data: bytes):
    out, mb = peak_mb(fn, data)
    assert mb < BUDGET_MB, f"{mb:.1f} MB traced for {len(data)} bytes"
    if isinstance(out, Exception):
        assert isinstance(out, ValueError) and len(str(out).split()) >= 3, repr(out)
    return out


@PROPS
@given(st.lists(st.lists(cell, min_size=1, max_size=6), min_size=0, max_size=12),
       st.sampled_from([",", ";", "\t", " "]), st.binary(max_size=8), st.booleans())
def test_property_malformed_csv(rows, sep, junk, gz):
    data = "\n".join(sep.join(r) for r in rows).encode("utf-8", "surrogatepass") + junk
    data = gzip.compress(data) if gz else data
    ds = assert_clear_or_loaded(lambda b: load_file(io.BytesIO(b), fmt="csv"), data)
    if not isinstance(ds, Exception):
        assert np.all(np.isfinite(ds.X_train)) and ds.n_train + ds.n_test >= 4


token = st.one_of(st.tuples(st.integers(-2, 10**12), st.sampled_from(["1", "0", "-2.5", "nan", "1e309", "x", ""]))
                  .map(lambda t: f"{t[0]}:{t[1]}"), st.sampled_from(["qid:1", "#", ":", "1:", "a:b"]))


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["0", "1", "-1", "2", "x", "inf"]), st.lists(token, max_size=5)),
                max_size=10))
def test_property_malformed_libsvm(lines):
    data = "\n".join(" ".join([lab, *toks]) for lab, toks in lines).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = assert_clear_or_loaded(lambda b: load_file(io.BytesIO(b), fmt="libsvm"), data)
    if not isinstance(ds, Exception):
        assert ds.n_features <= Limits().max_features


VALID_NPZ = metric_to_bytes(G4, {"dataset": "iris", "method": "arml"})


@PROPS
@given(st.one_of(
    st.integers(0, len(VALID_NPZ)).map(lambda k: VALID_NPZ[:k]),
    st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)).map(
        lambda t: VALID_NPZ[:t[0]] + bytes([t[1]]) + VALID_NPZ[t[0] + 1:]),
    st.tuples(st.sampled_from([(1, 4), (4, 3), (0, 4), (3,), (10**6, 4), (4, 10**9), ()]),
              st.sampled_from(["<f8", "<c16", "|b1", "<U2", "<i4", "|O"])).map(
        lambda t: _npz_with_header(*t)),
    st.binary(max_size=300)))
def test_property_malformed_npz(data):
    out = assert_clear_or_loaded(lambda b: load_metric(io.BytesIO(b), n_features=4), data)
    if not isinstance(out, Exception):
        G, meta = out
        assert G.shape[1] == 4 and np.all(np.isfinite(G)) and isinstance(meta, dict)


@functools.lru_cache(maxsize=None)
def _npz_with_header(shape, descr) -> bytes:
    """An .npz whose components header says ``shape``/``descr`` over 64 bytes of data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("components.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
            f.write(bytes(64))
    return buf.getvalue()


def test_budget_is_meaningful():
    """The memory budget of the property tests would catch the 69-byte LIBSVM file of the issue."""
    data = b"1 1:1\n0 3000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n"
    _, mb = peak_mb(load_file, io.BytesIO(data), fmt="libsvm", limits=Limits(max_features=10**7,
                                                                             max_dense_entries=10**9))
    assert mb > BUDGET_MB
