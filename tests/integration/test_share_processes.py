"""`freshrec run --share` and `freshrec serve --attach --workers 2` on one host: the servers score
the trainer's rows, survive its SIGKILL without a failed request, and follow the trainer that takes
the share over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]


def _model(url: str) -> dict:
    return httpx.get(f"{url}/model", timeout=30).json()


def _learned(url: str) -> int | None:
    """Events learned by the model served (None before the server answers)."""
    try:
        return _model(url).get("train_position", {}).get("events_learned")
    except httpx.TransportError:   # not listening yet
        return None


def _trainer(tmp_path: Path, port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        FRESHREC + ["run", "--format", "simulator", "--limit", "3000", "--chunk", "500", "--state",
                    str(tmp_path / "state"), "--port", str(port), "--share", "shop", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Load:
    """/predict requests one after another from a thread until `stop`; counts the answers."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed = url, 0, []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.halt.is_set():
                try:
                    answer = client.post("/predict", json={"user": 1, "candidates": list(range(1, 101))})
                    (self.failed.append((answer.status_code, answer.text[:200])) if answer.status_code != 200
                     else None)
                    self.ok += answer.status_code == 200
                except httpx.HTTPError as error:
                    self.failed.append(repr(error))

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(timeout=60)


def test_attached_servers_outlive_a_killed_trainer_and_follow_the_next(tmp_path: Path) -> None:
    env = {**os.environ, "FRESHREC_SHM": str(tmp_path / "shm")}
    trainer_port, port = free_port(), free_port()
    trainer = _trainer(tmp_path, trainer_port, env)
    server = subprocess.Popen(FRESHREC + ["serve", "--attach", "shop", "--workers", "2", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, load, restarted = f"http://127.0.0.1:{port}", None, None
    try:
        wait_until(lambda: _learned(url) == 3000, "the stream's events served from the shared tables", server)
        assert _model(url)["share"] == {"name": "shop", "generation": 1}
        clicks = [{"user": f"u{n}", "item": "i1", "label": 1.0} for n in range(5)]
        assert httpx.post(f"http://127.0.0.1:{trainer_port}/events", json={"events": clicks}).status_code == 202
        wait_until(lambda: _learned(url) == 3005, "posted events served", server)
        load = Load(url)
        wait_until(lambda: load.ok >= 20, "requests answered", server)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=60)
        answered = load.ok
        wait_until(lambda: load.ok >= answered + 50, "requests answered with the trainer dead", server)
        restarted = _trainer(tmp_path, trainer_port, env)
        wait_until(lambda: _model(url).get("share", {}).get("generation") == 2, "the new trainer's generation",
                   server)
        answered = load.ok
        wait_until(lambda: load.ok >= answered + 50, "requests answered on the new generation", server)
        wait_until(lambda: _learned(url) >= 3000, "the new trainer's events", server)
        load.stop()
        assert load.failed == []
    finally:
        if load is not None:
            load.stop()
        for name, process in (("trainer", trainer), ("restarted trainer", restarted), ("server", server)):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    output = process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    output = process.communicate()
                print(f"--- the {name}'s output:\n{output[0] or output[1]}")   # shown by pytest when the test fails
