"""Events accepted by `POST /events` (202) are durable: `freshrec run` killed after learning them but
before a checkpoint covered them learns them again when restarted on the same state, exactly once;
a refused event (422) reaches neither the journal nor the log. Waits are on conditions (served
figures, checkpoints on disk), never on the clock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from conftest import free_port, wait_until

from freshrec.engine.checkpoint import CheckpointStore
from freshrec.log import EventLog

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
STREAM, POSTED = 3_000, 5


def _command(state: Path, port: int, *extra: str) -> list[str]:
    return FRESHREC + ["run", "--format", "simulator", "--limit", str(STREAM), "--chunk", "1000",
                       "--checkpoint-events", "1000", "--state", str(state), "--port", str(port), "--quiet",
                       "--json", *extra]


def _answers(url: str, path: str) -> dict | None:
    try:
        return httpx.get(f"{url}{path}").json()
    except httpx.HTTPError:
        return None


def _learned(url: str) -> int | None:
    model = _answers(url, "/model")
    return model["train_position"]["events_learned"] if model and "train_position" in model else None


def _checkpointed_events(state: Path) -> int:
    latest = CheckpointStore(state / "checkpoints").latest()
    return int(latest.meta["events"]) if latest is not None else 0


def _users_in_log(state: Path) -> Counter:
    log = EventLog(state / "log", [])
    return Counter(u for chunk in log.read() for u in chunk.table.column("user_id").to_pylist())


def _journal_rows(state: Path) -> int:
    return sum(pa.ipc.open_stream(path.read_bytes()).read_all().num_rows
               for path in (state / "live").glob("*.arrow"))


def _finish(state: Path) -> dict:
    """Rerun on `state` to the stream's end (serving, so the live journal is read); its figures."""
    done = subprocess.run(_command(state, free_port(), "--exit-at-end"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_posted_events_survive_sigkill_and_are_learned_once_after_the_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(_command(state, port), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _learned(url) == STREAM, "the stream served", process)
        wait_until(lambda: _checkpointed_events(state) == STREAM, "the stream checkpointed", process)
        clicks = [{"user": f"journal-u{n}", "item": "i1", "label": 1} for n in range(POSTED)]
        assert httpx.post(f"{url}/events", json={"events": clicks}).status_code == 202
        bad = httpx.post(f"{url}/events", json={"user": "journal-bad", "item": "i1", "label": -1})
        assert bad.status_code == 422 and "label must be 0 or 1" in bad.json()["detail"]
        assert _journal_rows(state) == POSTED              # durable before the 202
        wait_until(lambda: _learned(url) == STREAM + POSTED, "the posted events served", process)
        assert _checkpointed_events(state) == STREAM        # learned, but no checkpoint covers them
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    figures = _finish(state)
    assert figures["restored_from"] is not None
    assert figures["events"] == figures["learned"] == figures["logged"] == STREAM + POSTED
    users = _users_in_log(state)
    assert {f"journal-u{n}": users[f"journal-u{n}"] for n in range(POSTED)} == {f"journal-u{n}": 1
                                                                                 for n in range(POSTED)}
    assert users["journal-bad"] == 0 and sum(users.values()) == STREAM + POSTED
    latest = CheckpointStore(state / "checkpoints").latest()
    assert latest.position["live"] == POSTED and latest.meta["events"] == STREAM + POSTED

    again = _finish(state)                                  # nothing left to learn: nothing learned twice
    assert again["rows"] == 0 and again["events"] == STREAM + POSTED
    assert _users_in_log(state)["journal-u0"] == 1
