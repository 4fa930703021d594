"""Soak: open-loop load on a server alone (`freshrec serve`) for `FRESHREC_SOAK_SECONDS` (300 by default;
longer by setting it) while the trainer it follows (`freshrec run --no-serve`) is SIGKILLed and
restarted twice. Not one request may fail (every answer a 200); the server's staleness alert must fire
while the trainer is down and clear once the restarted trainer publishes again; the trainer goes on
from its checkpoint each time."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.soak]
SECONDS = float(os.environ.get("FRESHREC_SOAK_SECONDS", "300"))
RATE = 60.0          # requests a second, open loop: /predict four times in five, /recommend once
STALENESS = "10s"    # the alert's bound (the trainer publishes every second while it runs)


class OpenLoop:
    """Requests sent at a fixed rate whatever the answers take (each in its own task), from a thread;
    `outcomes` counts each answer's status (or the exception's name)."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.outcomes: Counter = Counter()
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> OpenLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        started = time.monotonic()
        try:
            if n % 5:
                answer = await client.post("/predict", json={"user": n % 500, "candidates": [1, 2, 3, n % 300]})
            else:
                answer = await client.post("/recommend", json={"user": n % 500, "k": 10})
            self.outcomes[answer.status_code] += 1
        except httpx.HTTPError as error:
            self.outcomes[type(error).__name__] += 1
        self.slowest = max(self.slowest, time.monotonic() - started)

    async def _run(self) -> None:
        loop, pending = asyncio.get_running_loop(), set()
        # idle connections are dropped well before the server's keep-alive timeout (the soak's serve.yaml: 30 s);
        # with both at 5 s (httpx's and uvicorn's defaults), a client starved for 5 s on a busy machine sent
        # requests on connections the server was closing: ReadErrors that no server could avoid
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=50, keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
            start, n = loop.time(), 0
            while not self._stop.is_set():
                n += 1
                await asyncio.sleep(max(0.0, start + n / self.rate - loop.time()))
                task = asyncio.create_task(self._one(client, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)


def _staleness_firing(url: str) -> bool | None:
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    found = re.search(r'^freshrec_alert_firing\{alert="staleness"\} (\S+)$', text, re.M)
    return None if found is None else float(found.group(1)) == 1.0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=10).json()["ready"]
    except httpx.HTTPError:
        return False


def _trainer(state: Path) -> subprocess.Popen:
    """The trainer: the simulator as a live stream (1,000 events a second, read 500 at a time)."""
    return subprocess.Popen([sys.executable, "-m", "freshrec.cli", "run", "--format", "simulator", "--speed", "1",
                             "--chunk", "500", "--state", str(state), "--no-serve", "--sync-interval", "1s",
                             "--checkpoint-events", "5000", "--quiet", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(process: subprocess.Popen, how: int = signal.SIGTERM) -> tuple[str, str]:
    """Signal `process` (if it runs) and wait for it; its (stdout, stderr)."""
    if process.poll() is None:
        process.send_signal(how)
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_no_request_fails_while_the_trainer_is_killed_twice_and_the_staleness_alert_follows(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "serve.yaml").write_text(f"alerts: {{staleness: {STALENESS}}}\nserve: {{keep_alive_timeout: 30s}}\n")
    trainer = _trainer(state)
    server, load, killed = None, None, 0
    started = time.monotonic()
    try:
        wait_until(lambda: (state / "registry" / "full").is_dir(), "the trainer's first snapshot", trainer)
        server = subprocess.Popen([sys.executable, "-m", "freshrec.cli", "serve", "--registry", str(state / "registry"),
                                   "--port", str(port), "--config", str(tmp_path / "serve.yaml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _ready(url), "the server serves", server)
        load = OpenLoop(url, RATE).start()
        for kill_at in (SECONDS / 5, SECONDS / 2):   # two outages, each followed by a restart
            wait_until(lambda at=kill_at: time.monotonic() - started >= at, "the next outage", timeout=SECONDS)
            _stop(trainer, signal.SIGKILL)
            killed += 1
            wait_until(lambda: _staleness_firing(url) is True, "the staleness alert fires while the trainer is down",
                       server)
            trainer = _trainer(state)
            wait_until(lambda: _staleness_firing(url) is False, "the alert clears once the trainer publishes again",
                       server)
        wait_until(lambda: time.monotonic() - started >= SECONDS, "the end of the soak", timeout=SECONDS)
        load.stop()
        wait_until(lambda: _staleness_firing(url) is False, "the alert is clear with the trainer up", server)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        if load is not None:
            load.stop()
        output, log = _stop(trainer)
        if server is not None:
            _stop(server)
    print(f"soak: {dict(load.outcomes)}, slowest answer {load.slowest:.2f} s")
    assert killed == 2
    assert set(load.outcomes) == {200} and sum(load.outcomes.values()) >= RATE * SECONDS * 0.5, load.outcomes
    fired = re.search(r'^freshrec_alerts_fired_total\{alert="staleness"\} (\S+)$', metrics, re.M)
    assert fired is not None and float(fired.group(1)) >= 2, metrics
    figures = json.loads(output.splitlines()[-1])   # the last trainer went on from a checkpoint
    assert trainer.returncode == 0 and figures["restored_from"] is not None, log[-2000:]
