"""The catalogue of ``fault_inventory.py``: one list of :class:`Case` per surface.

A new surface (the app, a new command) adds a function returning its list and extends
``CASES`` in ``fault_inventory.main``. Each entry is (name, input, expectation, check).
"""
from __future__ import annotations

import bz2
import gzip
import io
import shutil
import struct
import zipfile

import numpy as np
from fault_inventory import (SHARED, Case, api, cli, cli_ok, ds_check, free_port, gz_bomb, kill_self_later, libsvm,
                             metric_npz, npz, npz_bomb, protect, rows, serve, write)

GOOD = rows(12, 2)
IRIS_G = np.diag([1.0, 2.0, 0.5, 1.5])


def _file(content, fmt=None, **kw):
    return lambda tmp: api("load_file")(io.BytesIO(content), fmt=fmt, **kw)


def _csv_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    big = "".join(f"{(i % 9)},{(i * 5) % 7},{'ab'[i % 2]}\n" for i in range(200_001)).encode()
    wide = lambda d: rows(10, d)  # noqa: E731
    t = [  # name, content, expect, check
        ("empty file", b"", "error", None),
        ("blank lines only", b"  \n\n\t\n", "error", None),
        ("header only", b"x,y,label\n", "error", None),
        ("NaN cell", b"1,2,a\n3,nan,b\n5,6,a\n7,8,b\n", "error", None),
        ("inf cell", b"1,2,a\n3,inf,b\n5,6,a\n7,8,b\n", "error", None),
        ("1e400 overflows to inf", b"1,2,a\n3,1e400,b\n5,6,a\n7,8,b\n", "error", None),
        ("text feature column", b"1,red,a\n3,blue,b\n5,red,a\n7,red,b\n", "error", None),
        ("ragged row", b"1,2,a\n3,4,b\n5,6\n7,8,b\n", "error", None),
        ("empty cell", b"1,2,a\n3,,b\n5,6,a\n7,8,b\n", "error", None),
        ("single class", b"1,2,a\n3,4,a\n5,6,a\n7,8,a\n", "error", None),
        ("class with one point", b"1,2,a\n3,4,a\n5,6,a\n7,8,b\n", "error", None),
        ("three rows", b"1,2,a\n3,4,b\n5,6,a\n", "error", None),
        ("one column", b"1\n2\n3\n4\n", "error", None),
        ("missing label", b"1,2,a\n3,4,\n5,6,a\n7,8,b\n", "error", None),
        ("NaN label", b"1,2,0\n3,4,nan\n5,6,0\n7,8,1\n9,1,1\n", "error", None),
        ("random binary bytes", rng.bytes(4096), "error", None),
        ("PNG image as CSV", b"\x89PNG\r\n\x1a\n" + rng.bytes(512), "error", None),
        ("Python source as CSV", b"import os\nprint(os.getcwd())\nx = 1\ny = 2\n", "error", None),
        ("NUL bytes in cells", b"1,2\x00,a\n3,4,b\n5,6,a\n7,8,b\n", "error", None),
        ("hex numbers", b"0x1,2,a\n0x3,4,b\n0x5,6,a\n0x7,8,b\n", "error", None),
        ("quoted comma in a cell", b'"1,5",2,a\n3,4,b\n5,6,a\n7,8,b\n', "error", None),
        ("one line of 2M columns", b"0," * 2_000_000 + b"a\n", "error", None),
        ("10-MB number", b"1" * 10_000_000 + b",2,a\n3,4,b\n5,6,a\n7,8,b\n", "error", None),
        ("gzip bomb (300 MB of rows)", gz_bomb(), "error", None),
        ("truncated gzip", gzip.compress(GOOD)[:-20], "error", None),
        ("truncated bz2", bz2.compress(GOOD)[:-20], "error", None),
        ("UTF-16 text", GOOD.decode().encode("utf-16"), "either", ds_check(2, 12)),
        ("latin-1 header (not UTF-8)", "caf\xe9,th\xe9,y\n".encode("latin-1") + GOOD, "ok", ds_check(2, 12)),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + GOOD, "ok", ds_check(2, 12)),
        ("CRLF line ends", GOOD.replace(b"\n", b"\r\n"), "ok", ds_check(2, 12)),
        ("semicolons", GOOD.replace(b",", b";"), "ok", ds_check(2, 12)),
        ("tabs", GOOD.replace(b",", b"\t"), "ok", ds_check(2, 12)),
        ("whitespace separated", GOOD.replace(b",", b"   "), "ok", ds_check(2, 12)),
        ("gzip compressed", gzip.compress(GOOD), "ok", ds_check(2, 12)),
        ("bz2 compressed", bz2.compress(GOOD), "ok", ds_check(2, 12)),
        ("a million blank lines", b"\n" * 1_000_000 + GOOD, "ok", ds_check(2, 12)),
        ("duplicate header names", b"f,f,y\n" + GOOD, "ok", ds_check(2, 12)),
        ("float labels", rows(12, 2, label=lambda i: f"{i % 2}.0"), "ok", ds_check(2, 12)),
        ("constant features", b"".join(b"1,1,%s\n" % b"ab"[i % 2:i % 2 + 1] for i in range(12)), "ok",
         ds_check(2, 12)),
        ("values +-1e308", b"1e308,1,a\n-1e308,2,b\n0,3,a\n1,4,b\n2,5,a\n3,6,b\n", "either", ds_check(2, 6)),
        ("underscored numbers", b"1_0,2,a\n3,4,b\n5,6,a\n7,8,b\n9,1,a\n2,2,b\n", "either", ds_check(2, 6)),
        ("4 rows, 2 classes", b"1,2,a\n3,4,b\n5,6,a\n7,8,b\n", "either", ds_check(2, 4)),
        ("10 x 5000 features", wide(5000), "either", ds_check(5000, 10)),
        ("10 x 20000 features", wide(20000), "either", ds_check(20000, 10)),
        ("200001 rows", big, "either", ds_check(2, 200_001)),
    ]
    out = [Case("library:csv", n, _file(c, "csv"), e, k, timeout=90) for n, c, e, k in t]
    load = api("load_file")
    args = [
        ("fmt='xlsx'", dict(fmt="xlsx")), ("test_size=1.5", dict(test_size=1.5)), ("test_size=0", dict(test_size=0)),
        ("test_size=nan", dict(test_size=float("nan"))), ("test_size='0.2'", dict(test_size="0.2")),
        ("n_train=0", dict(n_train=0)), ("n_train=-3", dict(n_train=-3)), ("n_train=True", dict(n_train=True)),
        ("n_test=2.5", dict(n_test=2.5)), ("seed='abc'", dict(seed="abc")),
    ]
    out += [Case("library:args", n, _file(GOOD, **kw)) for n, kw in args]
    out += [
        Case("library:args", "path does not exist", lambda tmp: load(tmp / "nope.csv")),
        Case("library:args", "path is a folder", lambda tmp: load(tmp)),
        Case("library:args", "an int as the file", lambda tmp: load(42)),
        Case("library:args", "file-like whose read() gives None", lambda tmp: load(type("F", (), {"read": lambda s: None})())),
        Case("library:args", "text StringIO", lambda tmp: load(io.StringIO(GOOD.decode())), "ok", ds_check(2, 12)),
    ]
    return out


def _libsvm_cases() -> list[Case]:
    base = libsvm(12)
    many = "".join(f"{i % 2} 1:{i % 7} 2:{i % 5}\n" for i in range(200_001)).encode()
    t = [
        ("valid 1-based", base, "ok", ds_check(2, 12)),
        ("index 3e7 in a 69-byte file", b"1 1:1\n0 30000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n", "error", None),
        ("index 2.5e9", b"1 1:1\n0 2500000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n", "error", None),
        ("index 3e9", b"1 1:1\n0 3000000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n", "error", None),
        ("index 1e20", b"1 1:1\n0 100000000000000000000:1\n1 2:1\n0 1:2\n1 2:2\n0 2:1\n", "error", None),
        ("0- and 1-based indices mixed", b"1 0:1 2:1\n0 1:2 2:3\n1 1:1 3:1\n0 1:5\n1 2:2\n0 2:1\n", "ok",
         ds_check(4, 6, warn="0-based")),
        ("decreasing indices", b"1 3:1 2:1\n0 1:2\n1 1:1\n0 1:5\n1 2:2\n0 2:1\n", "error", None),
        ("duplicate index", b"1 2:1 2:3\n0 1:2\n1 1:1\n0 1:5\n1 2:2\n0 2:1\n", "error", None),
        ("negative index", b"1 -1:1\n0 1:2\n1 1:1\n0 1:5\n1 2:2\n0 2:1\n", "error", None),
        ("fractional index", b"1 1.5:1\n0 1:2\n1 1:1\n0 1:5\n1 2:2\n0 2:1\n", "error", None),
        ("truncated last line", b"1 1:1\n0 1:2\n1 1:1\n0 1:5\n1 2:2\n0 2:", "error", None),
        ("no feature at all", b"1\n0\n1\n0\n1\n0\n", "error", None),
        ("NaN value", base + b"1 1:nan\n", "error", None),
        ("1e309 value", base + b"1 1:1e309\n", "error", None),
        ("inf label", base + b"inf 1:1\n", "error", None),
        ("text label", b"a 1:1\nb 1:2\na 1:3\nb 1:4\n", "error", None),
        ("binary garbage", np.random.default_rng(1).bytes(2048), "error", None),
        ("UTF-16 text", base.decode().encode("utf-16"), "error", None),
        ("qid tokens", b"1 qid:1 1:1\n0 qid:1 1:2\n1 qid:2 1:1\n0 qid:2 1:5\n1 qid:3 2:2\n0 qid:3 2:1\n", "ok",
         ds_check(2, 6)),
        ("comments", b"# a comment\n" + base.replace(b"\n", b" # c\n"), "ok", ds_check(2, 12)),
        ("gzip compressed", gzip.compress(base), "ok", ds_check(2, 12)),
        ("+1/-1 labels", b"".join(b"%s 1:%d 2:1\n" % (b"+1" if i % 2 else b"-1", i) for i in range(12)), "ok",
         ds_check(2, 12)),
        ("index 30000 on 12 lines", base + b"1 30000:1\n0 29999:1\n", "either", ds_check(30000, 14)),
        ("200001 points", many, "either", ds_check(2, 200_001)),
    ]
    return [Case("library:libsvm", n, _file(c, "libsvm"), e, k, timeout=90) for n, c, e, k in t]


def _idx(magic, dims, body: bytes) -> bytes:
    return gzip.compress(struct.pack(f">{1 + len(dims)}I", magic, *dims) + body)


def _mnist(tmp, images=None, labels=None, images_gz: bytes | None = None):
    for split, n in (("train", 6), ("t10k", 4)):
        im = images if images is not None and split == "train" else _idx(2051, (n, 28, 28), bytes(n * 784))
        lab = labels if labels is not None and split == "train" else _idx(2049, (n,), bytes(range(n)))
        write(tmp, f"data/mnist/{split}-images-idx3-ubyte.gz", images_gz if images_gz and split == "train" else im)
        write(tmp, f"data/mnist/{split}-labels-idx1-ubyte.gz", lab)


def _splice(tmp, train: bytes, test: bytes = b"1 1:1\n-1 1:2\n"):
    write(tmp, "data/splice/splice", train)
    write(tmp, "data/splice/splice.t", test)


def _gz_zeros(header: bytes, n: int) -> bytes:
    import zlib

    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts, block = [c.compress(header)], bytes(1 << 22)
    for _ in range(n // len(block)):
        parts.append(c.compress(block))
    return b"".join(parts + [c.flush()])


def _datafolder_cases() -> list[Case]:
    ld = lambda name="splice", **kw: (lambda tmp: api("load_dataset")(name, data_dir=tmp / "data", **kw))  # noqa: E731
    vk = lambda K: (lambda tmp: api("validate_for_k")(api("load_dataset")("iris"), K))  # noqa: E731
    ok_splice = b"1 1:1 2:2\n-1 1:2 2:1\n1 1:3\n-1 1:4\n"
    t = [
        ("splice index 3e9", lambda tmp: _splice(tmp, b"1 3000000000:1\n-1 1:1\n"), ld(), "error"),
        ("splice feature 61 of 60", lambda tmp: _splice(tmp, b"1 61:1\n-1 1:1\n"), ld(), "error"),
        ("splice empty training file", lambda tmp: _splice(tmp, b""), ld(), "error"),
        ("splice binary garbage", lambda tmp: _splice(tmp, np.random.default_rng(2).bytes(999)), ld(), "error"),
        ("splice unseen test label", lambda tmp: _splice(tmp, ok_splice, b"3 1:1\n"), ld(), "error"),
        ("mnist images truncated", lambda tmp: _mnist(tmp, images=_idx(2051, (6, 28, 28), bytes(100))), ld("mnist"),
         "error"),
        ("mnist wrong magic", lambda tmp: _mnist(tmp, images=_idx(2049, (6, 28, 28), bytes(6 * 784))), ld("mnist"),
         "error"),
        ("mnist header of 2^31 x 2^31 x 2^31", lambda tmp: _mnist(tmp, images=_idx(2051, (2**31,) * 3, b"")),
         ld("mnist"), "error"),
        ("mnist labels count mismatch", lambda tmp: _mnist(tmp, labels=_idx(2049, (5,), bytes(5))), ld("mnist"),
         "error"),
        ("mnist gzip bomb (1.2 GB body)", lambda tmp: _mnist(tmp, images_gz=_gz_zeros(
            struct.pack(">4I", 2051, 6, 28, 28), 1200 << 20)), ld("mnist"), "error"),
        ("data_dir is a file", lambda tmp: write(tmp, "data", b"x"), ld(), "error"),
    ]
    out = [Case("library:datafolder", n, run, e, setup=s, timeout=90) for n, s, run, e in t]
    out += [Case("library:datafolder", n, run) for n, run in [
        ("unknown name", ld("nope")), ("name None", ld(None)), ("n_test=0", ld("iris", n_test=0)),
        ("n_train below the class count", ld("iris", n_train=2)),
        ("K=2", vk(2)), ("K larger than a class", vk(201)), ("K=0", vk(0)), ("K='3'", vk("3")), ("K=1.5", vk(1.5)),
        ("K=-1", vk(-1))]]

    def status(tmp):
        fn = getattr(__import__("arml_core.data", fromlist=["x"]), "dataset_status", None)
        return (fn or api("list_datasets"))(tmp / "data")["splice"]
    out.append(Case("library:datafolder", "list: splice.t has no published checksum", status, "ok",
                    lambda r, w: None if "unverified" in str(r) else f"listed as {r!r}",
                    setup=lambda tmp: _splice(tmp, ok_splice)))
    return out


def _metric_file_cases() -> list[Case]:
    lm = api("load_metric")
    arr = lambda a: metric_npz(a)  # noqa: E731
    structured = np.zeros((4, 4), dtype=[("a", "<f8")])
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        z.writestr("components.npy", _npy(IRIS_G))
        for i in range(200_000):
            z.writestr(f"x{i}.npy", b"")
    t = [  # name, bytes, expect, check
        ("valid", arr(IRIS_G), "ok", IRIS_G),
        ("garbage bytes", b"not a zip at all", "error", None),
        ("empty file", b"", "error", None),
        ("no components", npz(weights=np.ones(3)), "error", None),
        ("NaN components", arr(np.full((4, 4), np.nan)), "error", None),
        ("inf components", arr(np.diag([1, np.inf, 1, 1.0])), "error", None),
        ("1-D components", arr(np.ones(4)), "error", None),
        ("3-D components", arr(np.ones((2, 2, 4))), "error", None),
        ("0 x 4 components", arr(np.ones((0, 4))), "error", None),
        ("complex components", arr(IRIS_G * (1 + 1j)), "error", None),
        ("complex, zero imaginary part", arr(IRIS_G.astype(complex)), "either", IRIS_G),
        ("1e160 * I", arr(1e160 * np.eye(4)), "error", None),
        ("1e-170 * I (M underflows)", arr(1e-170 * np.eye(4)), "error", None),
        ("zip bomb: 12000 x 12000 zeros (1.15 GB) in 1 MB", npz_bomb(), "error", None),
        ("zip bomb in the metadata", npz_bomb((40_000_000,), member="metadata", meta=False), "error", None),
        ("string components", npz(components=np.array([["a"] * 4] * 4)), "error", None),
        ("structured dtype", npz(components=structured), "error", None),
        ("bool components", arr(np.eye(4, dtype=bool)), "either", np.eye(4)),
        ("float16 components", arr(IRIS_G.astype(np.float16)), "ok", IRIS_G),
        ("big-endian components", arr(IRIS_G.astype(">f8")), "ok", IRIS_G),
        ("Fortran-order components", arr(np.asfortranarray(IRIS_G)), "ok", IRIS_G),
        ("metadata not JSON", npz(components=IRIS_G, metadata=np.array("{nope")), "error", None),
        ("metadata a JSON list", metric_npz(IRIS_G, [1, 2]), "error", None),
        ("metadata a JSON number", metric_npz(IRIS_G, 3), "error", None),
        ("wrong feature count", arr(np.eye(3)), "error", None),
        ("truncated file", arr(IRIS_G)[:300], "error", None),
        ("a .npy, not an .npz", _npy(IRIS_G), "error", None),
        ("200000 zip entries", many.getvalue(), "either", IRIS_G),
    ]

    def check_g(expected):
        def check(result, warned):
            G = result[0]
            return None if G.shape == (4, 4) and np.array_equal(G, expected) else f"wrong G {G[:1]}"
        return check

    def via(kind, data):
        def run(tmp):
            if kind == "bytes":
                return lm(io.BytesIO(data), n_features=4)
            return lm(write(tmp, "m.npz", data), n_features=4)
        return run
    out = [Case("library:metricfile", n, via("path", d), e, check_g(g)) for n, d, e, g in t]
    out.append(Case("library:metricfile", "valid, as BytesIO", via("bytes", arr(IRIS_G)), "ok", check_g(IRIS_G)))
    out.append(Case("library:metricfile", "object array (a pickle)", via("path", _pickled()), "error"))
    out.append(Case("library:metricfile", "path does not exist", lambda tmp: lm(tmp / "none.npz")))
    out.append(Case("library:metricfile", "path is a folder", lambda tmp: lm(tmp)))
    sm = api("save_metric")
    save = lambda G, out="m.npz": (lambda tmp: sm(tmp / out, G, dataset="iris", method="arml"))  # noqa: E731
    out += [
        Case("library:metricfile", "save NaN components", save(np.full((2, 2), np.nan))),
        Case("library:metricfile", "save complex components", save(IRIS_G * 1j)),
        Case("library:metricfile", "save beside a user's notes.json", save(IRIS_G, "notes.npz"), "error",
             setup=lambda tmp: (write(tmp, "notes.json", b'{"my": "notes"}'), protect(tmp, "notes.json"))),
        Case("library:metricfile", "save under a path that is a file", save(IRIS_G, "f/m.npz"),
             setup=lambda tmp: write(tmp, "f", b"x")),
    ]
    return out


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()


def _pickled() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, components=np.array([IRIS_G, "x"], dtype=object))
    return buf.getvalue()


def _cache_cases() -> list[Case]:
    settings = {"n_train": 0, "seed": 42}

    def setup_with(G=IRIS_G, **meta):
        def setup(tmp):
            key = api("run_key")("iris", "arml", settings)
            m = {"format_version": 1, "dataset": "iris", "method": "arml", "params": settings, "seed": 42,
                 "fit_time_s": 1.0, "info": {}, **meta}
            write(tmp, f"runs/{key}.npz", metric_npz(G, m.pop("_raw", m)))
        return setup

    def use(tmp):  # what the app and reproduce do with a hit
        hit = api("cached_metric")(tmp / "runs", "iris", "arml", settings, 4)
        if hit is not None:
            float(hit[1].get("fit_time_s") or 0.0), hit[1].get("info", {}).get("data_fingerprint")
        return hit

    def ignored(result, warned):
        if result is not None:
            return f"served from the cache: {result[1] if isinstance(result[1], list) else result[1].get('method')}"
        return None if any("ignor" in w for w in warned) else "ignored without a warning"
    t = [
        ("metadata a list", setup_with(_raw=[1, 2])),
        ("fit_time_s 'abc'", setup_with(fit_time_s="abc")),
        ("fit_time_s a list", setup_with(fit_time_s=[1])),
        ("info a list", setup_with(info=[1])),
        ("an LFDA metric under ARML's key", setup_with(method="lfda")),
        ("another data set's metric", setup_with(dataset="wine")),
        ("other settings", setup_with(params={"n_train": 50, "seed": 1})),
        ("complex components", setup_with(G=IRIS_G * 1j)),
        ("3-feature metric", setup_with(G=np.eye(3))),
        ("1e160 * I", setup_with(G=1e160 * np.eye(4))),
    ]
    out = [Case("library:cache", n, use, "ok", ignored, setup=s) for n, s in t]
    out.append(Case("library:cache", "valid hit", use, "ok",
                    lambda r, w: None if r is not None and np.allclose(r[0], IRIS_G) else "missed", setup=setup_with()))
    out.append(Case("library:cache", "garbage file", use, "ok", ignored, setup=lambda tmp: write(
        tmp, f"runs/{api('run_key')('iris', 'arml', settings)}.npz", b"garbage")))
    out.append(Case("library:cache", "zip bomb", use, "ok", ignored, setup=lambda tmp: write(
        tmp, f"runs/{api('run_key')('iris', 'arml', settings)}.npz", npz_bomb())))
    return out


def _metric_cases() -> list[Case]:
    cm, cfm, mfc = api("check_metric"), api("components_from_metric"), api("metric_from_components")
    rec, tm = api("robust_error_curve"), api("triplet_margin")
    t = [
        ("check_metric complex", lambda tmp: cm(np.eye(3) * (1 + 1j))),
        ("check_metric 1e200 * I", lambda tmp: cm(1e200 * np.eye(3))),
        ("check_metric 1e-320 * I", lambda tmp: cm(1e-320 * np.eye(3))),
        ("check_metric not square", lambda tmp: cm(np.ones((2, 3)))),
        ("check_metric not symmetric", lambda tmp: cm(np.array([[1.0, 2], [0, 1]]))),
        ("check_metric not PSD", lambda tmp: cm(-np.eye(2))),
        ("check_metric NaN", lambda tmp: cm(np.full((2, 2), np.nan))),
        ("check_metric strings", lambda tmp: cm([["a", "b"], ["c", "d"]])),
        ("check_metric 1-D", lambda tmp: cm(np.ones(3))),
        ("check_metric wrong size", lambda tmp: cm(np.eye(3), 4)),
        ("components_from_metric complex", lambda tmp: cfm(np.eye(3) * 1j)),
        ("components_from_metric 1e200 * I", lambda tmp: cfm(1e200 * np.eye(3))),
        ("metric_from_components complex", lambda tmp: mfc(np.eye(3) * (1 + 2j))),
        ("robust_error_curve NaN radii", lambda tmp: rec([np.nan, 1.0], [0, 1])),
        ("robust_error_curve no radii", lambda tmp: rec([], [0, 1])),
        ("triplet_margin no denominator", lambda tmp: tm(1.0, 0.5)),
    ]
    out = [Case("library:metric", n, f) for n, f in t]
    out.append(Case("library:metric", "check_metric valid", lambda tmp: cm([[2.0, 1], [1, 2]]), "ok",
                    lambda r, w: None if np.array_equal(r, [[2.0, 1], [1, 2]]) else "changed"))
    return out


def _download_cases() -> list[Case]:
    dl = api("download")
    pend = SHARED / "pendigits"

    def mirror_of(tmp, *, endless=(), delay=0.0, lie=None, files=("pendigits",), tamper=False):
        for f in files:
            src = SHARED / f
            if src.is_dir():
                shutil.copytree(src, tmp / "mirror" / f, dirs_exist_ok=True)
            if tamper or not src.is_dir():
                write(tmp, f"mirror/{f}/{f}", b"1 1:1\n")
        return serve(tmp / "mirror", endless=set(endless), delay=delay, lie_length=lie)

    def fetch(name="pendigits", **kw):
        def run(tmp):
            opts = {k: kw.pop(k) for k in ("overwrite", "timeout", "progress") if k in kw}
            return dl(name, tmp / "data", mirror=mirror_of(tmp, files=(name,), **kw), **opts)
        return run

    def sigterm(tmp):
        url = mirror_of(tmp, delay=0.05)
        kill_self_later(0.6)
        return dl("pendigits", tmp / "data", mirror=url)

    def interrupt(done, total, name):
        if done > 100_000:
            raise KeyboardInterrupt

    def keep_valid(tmp):
        shutil.copytree(pend, tmp / "data" / "pendigits")
        protect(tmp, "data/pendigits/pendigits")
    t = [
        ("unknown name", lambda tmp: dl("iris", tmp), "error", None),
        ("endless stream for a checksummed file", fetch(endless={"pendigits"}), "error", None),
        ("endless stream for splice.t (no checksum)", fetch("splice", endless={"splice.t"}), "error", None),
        ("Content-Length above the expected size", fetch(lie=10**12), "error", None),
        ("404", lambda tmp: dl("usps", tmp / "d", mirror=serve(tmp)), "error", None),
        ("unreachable mirror", lambda tmp: dl("mnist", tmp / "d", mirror=f"http://127.0.0.1:{free_port()}",
                                               timeout=5), "error", None),
        ("data_dir is a file", lambda tmp: dl("pendigits", write(tmp, "f", b"x"), mirror="http://127.0.0.1:9"),
         "error", None),
        ("a slow server past the timeout", fetch(delay=2.0, timeout=0.5), "error", None),
        ("tampered copy, overwrite=True keeps the valid file", fetch(overwrite=True, tamper=True), "error",
         keep_valid),
    ]
    out = [Case("library:download", n, run, e, setup=s, timeout=30) for n, run, e, s in t]
    out.append(Case("library:download", "SIGTERM mid-transfer", sigterm, "either", signal_ok=True, timeout=60))
    out.append(Case("library:download", "KeyboardInterrupt mid-transfer", fetch(delay=0.01, progress=interrupt),
                    "either", signal_ok=True, timeout=60))
    return [c for c in out if pend.is_dir() or "pendigits" not in c.name]


def _learning_cases() -> list[Case]:
    def iris():
        ds = api("load_dataset")("iris", n_test=20)
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test
    ml, knn = api("make_learner"), api("MahalanobisKNN")
    X, y, Xt, yt = iris()
    Xnan = Xt.copy()
    Xnan[0, 0] = np.nan
    t = [
        ("make_learner unknown", lambda tmp: ml("foo")),
        ("ARML n_epochs=-1", lambda tmp: ml("arml", n_epochs=-1).fit(X, y)),
        ("ARML learning_rate=nan", lambda tmp: ml("arml", n_epochs=3, learning_rate=float("nan")).fit(X, y)),
        ("NCA with NaN features", lambda tmp: ml("nca").fit(np.vstack([X, Xnan[:1]]), np.r_[y, 0])),
        ("KNN with even K", lambda tmp: knn(np.eye(4), 2).fit(X, y)),
        ("certified_radii K above a class", lambda tmp: api("certified_radii")(X, y, Xt, yt, np.eye(4), 201)),
        ("certified_radii NaN test point", lambda tmp: api("certified_radii")(X, y, Xnan, yt, np.eye(4), 3)),
        ("minimal_perturbations shape mismatch", lambda tmp: api("minimal_perturbations")(X, y, Xt[:, :3], yt,
                                                                                            np.eye(4))),
        ("attack unknown method", lambda tmp: api("attack")(X, y, Xt, yt, np.eye(4), 1, method="foo")),
        ("evaluate no methods", lambda tmp: api("evaluate")(api("load_dataset")("iris"), [], 1, [0.1])),
        ("parse_grid 'a,b'", lambda tmp: api("parse_grid")("a,b")),
        ("parse_grid ''", lambda tmp: api("parse_grid")("")),
        ("parse_grid '-1'", lambda tmp: api("parse_grid")("-1")),
        ("ARML device='cuda' without CUDA", lambda tmp: ml("arml", n_epochs=2, device="cuda").fit(X, y)),
    ]
    out = [Case("library:learning", n, f) for n, f in t]

    def one_class(method):  # the issue's finding was a TypeError (LMNN) or a silent fit (NCA, LFDA)
        def run(tmp):
            try:
                est = ml(method, **({"n_epochs": 3} if method == "arml" else {})).fit(X, np.zeros_like(y))
            except ValueError as exc:
                if "2 classes" not in str(exc):  # refused, but the message does not say why
                    return f"ValueError about something else: {exc}"
                raise
            return f"fitted: components {np.asarray(est.components_).shape}"
        return run
    out += [Case("library:learning", f"{name} on one class", one_class(m))
            for m, name in (("arml", "ARML"), ("lmnn", "LMNN"), ("nca", "NCA"), ("lfda", "LFDA"), ("itml", "ITML"))]
    if __import__("torch").cuda.is_available():
        out = [c for c in out if "cuda" not in c.name]
    return out


def library_cases() -> list[Case]:
    return (_csv_cases() + _libsvm_cases() + _datafolder_cases() + _metric_file_cases() + _cache_cases()
            + _metric_cases() + _download_cases() + _learning_cases())


def cli_cases() -> list[Case]:
    T = "table --dataset iris --methods euclidean --n-test 20 --quiet"
    put = lambda rel, data: (lambda tmp: write(tmp, rel, data))  # noqa: E731
    iris_csv = b"a,b,c,d,label\n" + b"".join(b"%d,%d,%d,%d,%s\n" % (i % 7, i % 5, i % 3, i % 11, b"xyz"[i % 3:i % 3 + 1])
                                            for i in range(60))
    cases = [
        ("no arguments", "", None),
        ("unknown command", "frobnicate", None),
        ("table unknown dataset", "table --dataset nope --quiet", None),
        ("table --k 2", T + " --k 2", None), ("table --k 0", T + " --k 0", None), ("table --k -1", T + " --k -1", None),
        ("table --k 1001", T + " --k 1001", None), ("table --grid a,b", T + " --grid a,b", None),
        ("table --grid ''", T.split() + ["--grid", ""], None), ("table --grid -0.1", T + " --grid -0.1", None),
        ("table --grid nan", T + " --grid nan", None), ("table --methods ''", T.split() + ["--methods", ""], None),
        ("table --methods foo", T + " --methods foo", None),
        ("table missing .npz", T + " --methods euclidean,missing.npz", None),
        ("table garbage .npz", T + " --methods euclidean,g.npz", put("g.npz", b"garbage")),
        ("table complex .npz", T + " --methods c.npz", put("c.npz", metric_npz(IRIS_G * (1 + 1j)))),
        ("table 1e160 .npz", T + " --methods h.npz", put("h.npz", metric_npz(1e160 * np.eye(4)))),
        ("table 3-feature .npz", T + " --methods w.npz", put("w.npz", metric_npz(np.eye(3)))),
        ("table zip-bomb .npz", T + " --methods b.npz", put("b.npz", npz_bomb())),
        ("table .npz with list metadata", T + " --methods l.npz", put("l.npz", metric_npz(IRIS_G, [1]))),
        ("table .npy renamed .npz", T + " --methods y.npz", put("y.npz", _npy(IRIS_G))),
        ("table --n-test 0", T + " --n-test 0", None), ("table --n-train -5", T + " --n-train -5", None),
        ("table --seed abc", T + " --seed abc", None),
        ("table --param arml.n_epochs=abc", T.replace("euclidean", "arml") + " --param arml.n_epochs=abc", None),
        ("table --param without a dot", T + " --param bad", None),
        ("table --param unknown name", T + " --param euclidean.foo=1", None),
        ("table --out under a file", T + " --out f/x", put("f", b"x")),
        ("table splice index 3e9", "table --dataset splice --methods euclidean --quiet",
         lambda tmp: _splice(tmp, b"1 3000000000:1\n-1 1:1\n")),
        ("table splice garbage", "table --dataset splice --methods euclidean --quiet",
         lambda tmp: _splice(tmp, np.random.default_rng(3).bytes(500))),
        ("table a CSV over --max-features", "table --dataset x.csv --methods euclidean --max-features 2 --quiet",
         put("x.csv", iris_csv)),
        ("train --method foo", "train --dataset iris --method foo --out m.npz", None),
        ("train --out under a file", "train --dataset iris --method euclidean --out f/m.npz --quiet", put("f", b"x")),
        ("train --param arml.n_epochs=0", "train --dataset iris --method arml --out m.npz --param arml.n_epochs=0 "
         "--quiet", None),
        ("download unknown", "download nope", None),
        ("download unreachable mirror", ["download", "pendigits", "--mirror", "http://127.0.0.1:9", "--quiet"], None),
        ("reproduce unknown data set", "reproduce --datasets nope", None),
        ("reproduce unknown method", "reproduce --datasets splice --methods foo --quiet", None),
        ("reproduce unknown stage", "reproduce --datasets splice --stages foo --quiet", None),
        ("reproduce --n-attack -1", "reproduce --datasets splice --n-attack -1 --quiet", None),
    ]
    out = [cli(n, a, setup=s) for n, a, s in cases]
    out.append(cli("train beside a user's notes.json", "train --dataset iris --method euclidean --out notes.npz "
                   "--quiet", setup=lambda tmp: (write(tmp, "notes.json", b'{"my": "notes"}'),
                                                 protect(tmp, "notes.json"))))
    out += [
        cli("table iris euclidean K=1", T, "ok", cli_ok("Exact robust error")),
        cli("table iris K=3 with a saved metric", T + " --k 3 --methods euclidean,m.npz", "ok",
            cli_ok("Certified robust error", "arml:m"), setup=put("m.npz", metric_npz(IRIS_G))),
        cli("table --n-test 10**8 uses all", T + " --n-test 100000000", "ok", cli_ok("Exact robust error")),
        cli("table a user CSV", "table --dataset x.csv --methods euclidean --quiet", "either",
            cli_ok("Exact robust error"), setup=put("x.csv", iris_csv)),
        cli("list: splice.t unverified", "list", "ok", cli_ok("unverified"),
            setup=lambda tmp: _splice(tmp, b"1 1:1\n-1 1:2\n")),
        cli("list, an empty data folder", "list --data-dir nowhere", "ok", cli_ok("missing")),
        cli("SIGTERM during a table", T.replace("euclidean", "arml") + " --param arml.n_epochs=100000",
            "either", signal_ok=True, kill_after=3.0),
    ]
    if (SHARED / "pendigits").is_dir():
        def slow(tmp):
            shutil.copytree(SHARED / "pendigits", tmp / "mirror" / "pendigits")
        out += [
            Case("cli", "download SIGTERM mid-transfer", lambda tmp: _cli_download(tmp, delay=0.05, kill=0.6),
                 "either", signal_ok=True, setup=slow),
            Case("cli", "download endless stream", lambda tmp: _cli_download(tmp, endless={"pendigits"}),
                 "error", setup=slow, timeout=30),
        ]
    return out


def _cli_download(tmp, *, delay=0.0, kill=None, endless=()):
    from fault_inventory import run_cli

    url = serve(tmp / "mirror", delay=delay, endless=set(endless))
    if kill:
        kill_self_later(kill)
    return run_cli(["download", "pendigits", "--mirror", url, "--data-dir", str(tmp / "data"), "--quiet"], tmp)

