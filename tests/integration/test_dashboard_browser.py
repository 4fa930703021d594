"""`/dashboard` in headless Chromium (Debian's, driven by Playwright) while `freshrec run` replays the
simulator and a client asks for predictions: every chart of the loop appears with data, the picture
moves between two screenshots taken a version apart, and the browser logs no error. `FRESHREC_DASHBOARD_PNG`
names a file to keep the second screenshot in (the README's picture is made so)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

pytestmark = pytest.mark.integration
CHARTS = ("events", "quality", "freshness", "age", "version", "requests", "latency", "dead", "rows", "fusion")


def _ask(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            try:
                client.post("/predict", json={"user": 1, "candidates": [1, 2, 3]})
                client.post("/recommend", json={"user": 2, "k": 5})
            except httpx.TransportError:
                pass


def _served(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).json()["version"] is not None
    except httpx.HTTPError:
        return False


def test_the_dashboard_draws_the_running_loop(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it with apt"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "freshrec.cli", "run", "--format", "simulator", "--limit",
                                "5000000", "--state", str(tmp_path / "state"), "--port", str(port), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop, errors = threading.Event(), []
    asker = threading.Thread(target=_ask, args=(url, stop), daemon=True)
    try:
        wait_until(lambda: _served(url), "a served version", process)
        asker.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/dashboard")
            for chart in CHARTS:
                page.wait_for_selector(f"#chart-{chart} canvas", timeout=120_000)
            page.wait_for_function("() => document.querySelectorAll('.u-legend').length >= 10", timeout=120_000)
            first = page.screenshot(full_page=True)
            version = page.inner_text("#version")
            page.wait_for_function(f"() => document.getElementById('version').textContent !== '{version}'",
                                   timeout=120_000)   # a newer version was published and polled
            if os.environ.get("FRESHREC_DASHBOARD_PNG"):   # a picture of a minute of it
                page.wait_for_function("() => Number(document.body.dataset.polls) >= 60", timeout=300_000)
            second = page.screenshot(full_page=True)
            series = page.evaluate("() => [...document.querySelectorAll('.card')]"
                                   ".filter(c => c.style.display !== 'none').map(c => c.id)")   # drawn
            browser.close()
        if os.environ.get("FRESHREC_DASHBOARD_PNG"):
            Path(os.environ["FRESHREC_DASHBOARD_PNG"]).write_bytes(second)
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=120)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, log[-3000:]
    assert set(CHARTS) <= {s.removeprefix("chart-") for s in series} and "chart-lag" not in series   # no Kafka
    assert first != second and errors == []
