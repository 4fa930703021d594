"""`/dashboard` in headless Chromium (Debian's, driven by Playwright) while `freshrec run` replays the
simulator with two arms (online and frozen) and a client asks for predictions and posts its clicks back:
every chart of the loop and of the arms appears with data, the picture moves between two screenshots
taken a version apart, and the browser logs no error. `FRESHREC_DASHBOARD_PNG`
names a file to keep the second screenshot in (the README's picture is made so)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_port, readme_block_commands, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a browser and a server, waited on
CHARTS = ("events", "quality", "freshness", "age", "version", "requests", "latency", "dead", "rows", "evictions",
          "fusion", "arm-ctr", "arm-latency", "arm-cost")
REPO = Path(__file__).resolve().parents[2]


def _ask(url: str, stop: threading.Event) -> None:
    """Users 0-19 ask for predictions and click the first item one time in four (posted back)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        asked = 0
        while not stop.is_set():
            asked += 1
            try:
                answer = client.post("/predict", json={"user": asked % 20, "candidates": [1, 2, 3]}).json()
                client.post("/events", json={"user": asked % 20, "item": 1, "label": int(asked % 4 == 0),
                                             "arm": answer["arm"]})
                client.post("/recommend", json={"user": 2, "k": 5})
            except httpx.TransportError:
                pass


def _with(args: list[str], values: dict[str, object]) -> list[str]:
    """`args` with the value after each option of `values` replaced."""
    out = list(args)
    for option, value in values.items():
        out[out.index(option) + 1] = str(value)
    return out


def _freshrec(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "freshrec.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def _served(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).json()["ready"]
    except httpx.HTTPError:
        return False


def test_the_dashboard_draws_the_running_loop(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it with apt"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run, in_log, in_server = readme_block_commands("Live A/B arms")   # its arms log: out/arms, from tmp_path
    process = subprocess.Popen([sys.executable, "-m", "freshrec.cli", *_with(run, {
        "--state": tmp_path / "state", "--port": port, "--config": REPO / "docs" / "experiment.yaml"}),
        "--limit", "5000000", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
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
            page.wait_for_function("() => document.querySelectorAll('.u-legend').length >= 14", timeout=120_000)
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
        live = _freshrec([in_server[0], in_server[1], url, *in_server[3:]], tmp_path)
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=120)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, log[-3000:]
    arms = json.loads(live.stdout.splitlines()[-1])["arms"]
    assert set(arms) == {"online", "frozen"} and all(arm["labelled"] > 0 for arm in arms.values())
    logged = _freshrec(in_log, tmp_path).stdout   # every process's tallies, written at its exit
    assert "CTR 95% interval" in logged and "online" in logged and "frozen" in logged
    assert set(CHARTS) <= {s.removeprefix("chart-") for s in series} and "chart-lag" not in series   # no Kafka
    assert first != second and errors == []
