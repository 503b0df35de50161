"""Time from navigation to a fully drawn page, in a real browser (Chromium + Playwright),
with the metrics already trained and cached (digits, Euclidean + LFDA + ARML, K = 1).

    python benchmarks/bench_browser.py [--dataset digits] [--repeats 3]
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

from _common import ROOT, table

CHROMIUM = os.environ.get("ARML_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = [("", "Train & compare", True), ("boundaries", "Decision boundaries", True),
         ("curves", "Robustness curves", True), ("examples", "Adversarial examples", True),
         ("pairwise", "Pairwise attacks", True)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"SKIPPED: no Chromium at {CHROMIUM}")
        return
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = tempfile.mkdtemp(prefix="arml_runs_")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                             str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                            env={**os.environ, "ARML_RUNS_DIR": runs, "OMP_WAIT_POLICY": "PASSIVE"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = f"?dataset={a.dataset}&methods=euclidean,lfda,arml&K=1&n_test=200"
    base = f"http://127.0.0.1:{port}"
    idle = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    try:
        time.sleep(3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/{query}", wait_until="networkidle")
            page.get_by_role("button", name=re.compile(r"^(Train \d+ method|Retrain all)")).click(timeout=300_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=300_000)
            page.wait_for_function(idle, timeout=300_000)
            # warm every page once (computations cached), then time
            timings = {slug: [] for slug, _, _ in PAGES}
            for rep in range(a.repeats + 1):
                for slug, title, has_chart in PAGES:
                    t0 = time.perf_counter()
                    page.goto(f"{base}/{slug}{query}", wait_until="domcontentloaded")
                    page.get_by_role("heading", name=title).first.wait_for(timeout=300_000)
                    if has_chart:
                        page.locator(".js-plotly-plot").first.wait_for(timeout=300_000)
                    page.wait_for_function(idle, timeout=300_000)
                    if rep:
                        timings[slug].append(time.perf_counter() - t0)
            browser.close()
    finally:
        proc.terminate()
    rows = [[title, f"{min(timings[slug]):.2f}", f"{sorted(timings[slug])[len(timings[slug]) // 2]:.2f}",
             f"{max(timings[slug]):.2f}"] for slug, title, _ in PAGES]
    print(f"{a.dataset}, 200 test points, cached metrics (Euclidean, LFDA, ARML), K = 1; "
          f"a fresh page load (new session) each time, {a.repeats} repeats")
    print(table(["page", "min s", "median s", "max s"], rows))
    print("\ntarget: under 2 s per page")


if __name__ == "__main__":
    main()
