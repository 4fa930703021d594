"""`freshrec run`'s alerts, live: its server's /metrics carries the trainer's figures and the alert gauges;
once the stream has ended and no new version comes, the served model grows older than `alerts.staleness`
and the staleness alert fires (gauge, webhook); events posted to the server make a new version and it
clears. Every wait is on what the server or the webhook says, never on the clock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]


def _metric(client: httpx.Client, line_start: str) -> float | None:
    """The value of the first /metrics line starting with `line_start` (None: none, or no server yet)."""
    try:
        text = client.get("/metrics").text
    except httpx.TransportError:
        return None
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)), None)


def test_staleness_fires_when_no_version_comes_and_clears_with_a_new_one(tmp_path: Path) -> None:
    posted: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = tmp_path / "alerts.yaml"
    config.write_text(f"alerts:\n  staleness: 3s\n  webhook: http://127.0.0.1:{hook.server_port}/hook\n")
    port = free_port()
    process = subprocess.Popen(FRESHREC + ["run", "--config", str(config), "--format", "simulator", "--limit", "3000",
                                           "--state", str(tmp_path / "state"), "--port", str(port), "--quiet",
                                           "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    firing = 'freshrec_alert_firing{alert="staleness"}'
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until(lambda: (_metric(client, "freshrec_events_learned_total") or 0) >= 3000, "the stream learned",
                       process)
            assert _metric(client, "freshrec_window_auc") is not None and _metric(client, "freshrec_model_rows") > 0
            wait_until(lambda: _metric(client, firing) == 1.0, "staleness firing", process)
            assert client.post("/events", json={"user": 1, "item": 2, "label": 1}).status_code == 202
            wait_until(lambda: _metric(client, firing) == 0.0, "staleness cleared by a new version", process)
            wait_until(lambda: len(posted) >= 2, "the webhook told")
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        hook.shutdown()
        hook.server_close()
    assert process.returncode == 0, errors
    assert [(p["alert"], p["firing"]) for p in posted[:2]] == [("staleness", True), ("staleness", False)]
    assert "the served model is" in posted[0]["message"]
    assert json.loads(out.strip().splitlines()[-1])["alerts_firing"] == {}
