"""Real-browser screenshots of the app (Debian Chromium + Playwright), for looking at what
was built: starts a server on an empty runs folder (or ``--runs DIR``), opens each
``--page`` with the query ``--query``, presses Train first when ``--train``, waits until
Streamlit is idle and saves ``artifacts/screenshots/<prefix>_<page>_<w>x<h>.png``.

    python tools/screenshots.py --query "dataset=moons&K=3&methods=euclidean,lfda" \\
        --train --page curves --page examples --size 1280x2400 --prefix exactk3
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ARML_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


def wait_idle(page, timeout_ms: int) -> None:
    time.sleep(1.0)
    page.wait_for_function(IDLE, timeout=timeout_ms)
    time.sleep(1.5)  # plotly draws after the script run ends


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--query", default="")
    p.add_argument("--page", action="append", default=[], help="url path ('' = Train & compare); repeatable")
    p.add_argument("--size", action="append", default=[], help="WxH; repeatable (default 1280x2400)")
    p.add_argument("--train", action="store_true", help="press Train on the first page before the others")
    p.add_argument("--runs", default=None)
    p.add_argument("--prefix", default="shot")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--click", action="append", default=[], help="'page:button text' to click after loading")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    out = ROOT / "artifacts" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = a.runs or tempfile.mkdtemp(prefix="arml_shots_")
    env = {**os.environ, "ARML_RUNS_DIR": runs, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    q = f"?{a.query}" if a.query else ""
    sizes = [tuple(int(v) for v in s.split("x")) for s in (a.size or ["1280x2400"])]
    try:
        time.sleep(4)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for w, h in sizes:
                page = browser.new_page(viewport={"width": w, "height": h})
                if a.train:
                    page.goto(f"{base}/{q}", wait_until="networkidle")
                    wait_idle(page, a.timeout * 1000)
                    btn = page.get_by_role("button", name=re.compile(r"^(Train \d+ method|Retrain all)"))
                    if btn.count():
                        btn.first.click()
                        wait_idle(page, a.timeout * 1000)
                for slug in a.page or [""]:
                    page.goto(f"{base}/{slug}{q}", wait_until="networkidle")
                    wait_idle(page, a.timeout * 1000)
                    for c in a.click:
                        where, _, text = c.partition(":")
                        if where == slug:
                            page.get_by_text(text, exact=False).first.click()
                            wait_idle(page, a.timeout * 1000)
                    name = out / f"{a.prefix}_{slug or 'train'}_{w}x{h}.png"
                    page.screenshot(path=str(name), full_page=True)
                    print(name)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
