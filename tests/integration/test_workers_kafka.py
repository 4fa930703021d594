"""`freshrec run --workers 2 --source kafka`: rank 0 consumes the topic in the consumer group, rank 1
reads the batches rank 0 outlines; the pair learns what one process learns from the same topic, every
event once, and a worker killed with SIGKILL (at a committed cut) loses nothing and learns nothing
twice: the logs hold each message once and the group's offsets end at the topic's end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import committed_offsets, logged_messages, need_real_data, wait_until

from freshrec.cluster.cuts import latest_cut, rank_root

pytestmark = pytest.mark.integration
EVENTS = 30_000
FRESHREC = [sys.executable, "-m", "freshrec.cli"]


@pytest.fixture(scope="module")
def topic():
    """A broker with MovieLens-100k's first EVENTS events on topic `ratings` (4 partitions, by user)."""
    from freshrec.events.kafka import local_broker

    root = need_real_data("movielens-100k").parent
    with local_broker() as bootstrap:
        produce = ["produce", "--format", "movielens-100k", "--bootstrap", bootstrap, "--topic", "ratings",
                   "--limit", str(EVENTS), "--quiet", "--json"]
        done = subprocess.run(FRESHREC + produce, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "FRESHREC_DATA": str(root)})
        assert done.returncode == 0, done.stderr
        yield bootstrap


def _command(bootstrap: str, state: Path, group: str, workers: int | None) -> list[str]:
    return FRESHREC + ["run", "--format", "movielens-100k", "--source", "kafka", "--bootstrap", bootstrap,
                       "--topic", "ratings", "--kafka-setting", f"group.id={group}", "--idle-timeout", "5s",
                       "--state", str(state), "--no-serve", "--offline-interval", "off", "--batch-window", "off",
                       "--checkpoint-events", "5000", "--quiet", "--json",
                       *(["--workers", str(workers)] if workers else [])]


def _figures(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_workers_learn_what_one_process_learns_from_a_topic(topic: str, tmp_path: Path) -> None:
    one = _figures(subprocess.run(_command(topic, tmp_path / "one", "one", None), capture_output=True, text=True,
                                  timeout=600))
    pair = _figures(subprocess.run(_command(topic, tmp_path / "pair", "pair", 2), capture_output=True, text=True,
                                   timeout=600))
    assert one["learned"] == pair["learned"] == pair["scored_rows"] == EVENTS and pair["workers"] == 2
    assert pair["source"] == "kafka" and pair["restored_from"] is None
    # each run cuts the topic into chunks as its consumer's fetches come: micro-batches differ a little
    assert abs(pair["auc"] - one["auc"]) <= 0.01, (pair["auc"], one["auc"])
    logged = logged_messages(tmp_path / "pair")
    assert len(logged) == len(set(logged)) == EVENTS
    assert all(learned > 0 for learned in (r["learned"] for r in pair["per_rank"]))
    assert committed_offsets(topic, "pair", "ratings") == EVENTS


def test_a_killed_worker_loses_nothing_and_learns_nothing_twice(topic: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    launcher = subprocess.Popen(_command(topic, state, "killed", 2), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: (latest_cut(state) or {"step": 0})["step"] >= 2, "a second cut", launcher, timeout=300)
        os.kill(int((rank_root(state, 1) / "pid").read_text()), signal.SIGKILL)   # the follower
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["restored_from"] is not None and figures["learned"] == EVENTS
    logged = logged_messages(state)
    assert len(logged) == len(set(logged)) == EVENTS
    assert committed_offsets(topic, "killed", "ratings") == EVENTS
