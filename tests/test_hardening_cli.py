"""Hardening of the command line: every bad input is exit code 2 with one `error:` line and no
traceback, the limits can be raised with flags, `list` says what is unverified, and an
interrupted download leaves nothing behind."""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arml_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
G4 = np.diag([1.0, 2.0, 0.5, 1.5])
TABLE = ["table", "--dataset", "iris", "--methods", "euclidean", "--n-test", "20", "--quiet"]


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def csv_file(path: Path, n=60, d=4) -> Path:
    path.write_text("".join(",".join(str((i * 7 + j) % 10) for j in range(d)) + f",{'xyz'[i % 3]}\n"
                            for i in range(n)))
    return path


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_clear(rc, err, *needles):
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, (rc, err)
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize("make, needle", [
    (lambda p: npz(p, components=G4 * (1 + 1j)), "complex"),
    (lambda p: npz(p, components=1e160 * np.eye(4)), "outside the range"),
    (lambda p: npz(p, components=G4, metadata=np.array("[1]")), "not an object"),
    (lambda p: npz(p, components=np.eye(3)), "for 3 features"),
    (lambda p: (np.save(p.with_suffix(".npy"), G4), p.write_bytes(p.with_suffix(".npy").read_bytes()))[-1], ".npy"),
])
def test_table_refuses_bad_metric_files(tmp_path, capsys, make, needle):
    path = tmp_path / "m.npz"
    make(path)
    rc, _, err = run(TABLE[:4] + [f"euclidean,{path}"] + TABLE[5:], capsys)
    assert_clear(rc, err, needle)


def test_table_reads_a_user_file_and_the_limit_flags(tmp_path, capsys):
    path = csv_file(tmp_path / "x.csv")
    rc, out, _ = run(["table", "--dataset", str(path), "--methods", "euclidean", "--quiet"], capsys)
    assert rc == 0 and "Exact robust error" in out
    rc, _, err = run(["table", "--dataset", str(path), "--methods", "euclidean", "--max-features", "2",
                      "--quiet"], capsys)
    assert_clear(rc, err, "over the limit of 2", "--max-features")
    wide = csv_file(tmp_path / "w.csv", n=30, d=5000)
    rc, _, err = run(["table", "--dataset", str(wide), "--methods", "euclidean", "--quiet"], capsys)
    assert_clear(rc, err, "5,000", "--max-features")
    rc, _, err = run(["table", "--dataset", str(path), "--methods", "euclidean", "--max-points", "0",
                      "--quiet"], capsys)
    assert_clear(rc, err, "positive integer")


def test_malformed_param_is_an_error_line(capsys):
    rc, _, err = run(TABLE + ["--param", "bad"], capsys)
    assert_clear(rc, err, "METHOD.NAME=VALUE")


def test_list_says_unverified(tmp_path, capsys):
    (tmp_path / "splice").mkdir()
    (tmp_path / "splice" / "splice").write_text("1 1:1\n-1 1:2\n")
    (tmp_path / "splice" / "splice.t").write_text("1 1:1\n")
    rc, out, _ = run(["list", "--data-dir", str(tmp_path)], capsys)
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("splice"))
    assert "available (unverified: no published checksum for splice.t)" in line
    assert "missing (python -m arml_core download mnist)" in out


def test_train_keeps_a_users_json(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    rc, _, err = run(["train", "--dataset", "iris", "--method", "euclidean", "--out", str(tmp_path / "notes.npz"),
                      "--quiet"], capsys)
    assert_clear(rc, err, "would overwrite")
    assert json.loads((tmp_path / "notes.json").read_text()) == {"mine": 1}


def test_zip_bomb_metric_in_a_real_process(tmp_path):
    """`python -m arml_core` itself: exit 2, one error line, no traceback, little memory."""
    bomb = tmp_path / "b.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("components.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": (9000, 9000)})
            f.write(bytes(1 << 16))  # the header alone is read: it declares 648 MB
    p = subprocess.run([sys.executable, "-m", "arml_core", *TABLE[:4], f"euclidean,{bomb}", *TABLE[5:]],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "error:" in p.stderr, p.stderr[-500:]
    assert "for 9000 features" in p.stderr


class _Slow(http.server.BaseHTTPRequestHandler):
    data = bytes(500_000)

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        try:
            for i in range(0, len(self.data), 1 << 14):
                self.wfile.write(self.data[i:i + (1 << 14)])
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_download_sigterm_leaves_no_partial_file(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "arml_core", "download", "pendigits", "--quiet",
                                 "--mirror", f"http://127.0.0.1:{httpd.server_address[1]}",
                                 "--data-dir", str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.time() + 60
        while not list(tmp_path.rglob("*.part")) and time.time() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.rglob("*.part")), "the download never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert list(tmp_path.rglob("*.part")) == [] and "Traceback" not in proc.stderr.read()
    finally:
        httpd.shutdown()
        httpd.server_close()


