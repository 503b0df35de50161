"""The real app in a real browser: streamlit run + Playwright driving Debian's Chromium.

Visits every page, trains on figure1, waits for the charts, asserts no exception box,
and saves a screenshot of each page to artifacts/screenshots/ (checked below).
Skipped when Chromium or Playwright is missing (.ci/run installs both).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ARML_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = [("", "Train & compare"), ("boundaries", "Decision boundaries"), ("curves", "Robustness curves"),
         ("examples", "Adversarial examples"), ("pairwise", "Pairwise attacks"),
         ("reproduction", "Paper reproduction")]
HAS_RESULTS = any((ROOT / "results").glob("*/metrics_meta.json"))  # the committed reproduction

playwright = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "ARML_RUNS_DIR": str(tmp_path_factory.mktemp("runs")), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_idle(page, timeout=120_000):
    """Wait until Streamlit reports no script running."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def _no_exception(page, where):
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:500]}"


def test_every_page_in_a_real_browser(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/?dataset=figure1&methods=euclidean,lfda&K=1", wait_until="networkidle")
        page.get_by_text("Train & compare", exact=False).first.wait_for(timeout=60_000)
        try:
            page.get_by_role("button", name=re.compile(r"^(Train \d+ method|Retrain all)")).click(timeout=180_000)
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        _wait_idle(page)
        _no_exception(page, "train")
        for slug, title in PAGES:
            page.goto(f"{server}/{slug}?dataset=figure1&methods=euclidean,lfda&K=1", wait_until="networkidle")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            if slug != "examples" and (slug != "reproduction" or HAS_RESULTS):
                page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            _wait_idle(page)
            _no_exception(page, slug)
            assert page.get_by_text("Page not found").count() == 0, slug
            page.screenshot(path=str(SHOTS / f"{slug or 'train'}.png"), full_page=True)
        browser.close()
    shots = sorted(SHOTS.glob("*.png"))
    assert [s.stem for s in shots] == sorted(slug or "train" for slug, _ in PAGES)
    assert all(s.stat().st_size > 10_000 for s in shots)  # a drawn page, not a blank one
