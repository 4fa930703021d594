"""The engine survives SIGKILL: restarted from its checkpoints it ends with the same model, bit for
bit, as a run that was never interrupted, and its event log holds every event exactly once; the same
through Kafka (nothing lost, nothing trained twice). Kills are timed by progress (a new checkpoint
on disk), never by the clock."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from conftest import need_real_data

from freshrec.engine.checkpoint import CheckpointStore
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.kafka import KafkaSink, create_topic
from freshrec.features import FeaturePipeline, default_specs
from freshrec.log import EventLog

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
EVENTS = 30_000


def _command(state: Path, *extra: str) -> list[str]:
    return FRESHREC + ["run", "--state", str(state), "--no-serve", "--chunk", "2000", "--checkpoint-events",
                       "2000", "--quiet", "--json", *extra]


def _wait_for_checkpoints(process: subprocess.Popen, state: Path, count: int, timeout: float = 240.0) -> None:
    """Until `count` checkpoints newer than the newest one now in `state` have appeared (or the
    process has ended); a generous deadline for a slow machine or a cold numba cache."""
    store = CheckpointStore(state / "checkpoints")
    target = max(store.steps(), default=0) + count
    deadline = time.monotonic() + timeout
    while max(store.steps(), default=0) < target and process.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint {target} in {state} after {timeout} s"
        time.sleep(0.01)


def _crash_then_finish(command: list[str], state: Path, kills: int, seed: int) -> dict:
    """Start, SIGKILL once 1 or 2 new checkpoints have appeared (kill points differ), `kills` times,
    then run to the end; the last figures."""
    rng = random.Random(seed)
    for _ in range(kills):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_checkpoints(process, state, rng.choice((1, 2)))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _positions(state: Path) -> list[tuple[str, int]]:
    log = EventLog(state / "log", [])
    return [(chunk.source, int(p)) for chunk in log.read() for p in chunk.positions]


def test_sigkill_at_five_points_gives_the_uninterrupted_model_bit_for_bit(tmp_path: Path) -> None:
    """With micro-batches cut by event time too (an hour at most: MovieLens' sessions), so the
    batch boundaries after a restore must fall where they fell in the uninterrupted run."""
    data = need_real_data("movielens-100k")
    args = ("--data", str(data), "--limit", str(EVENTS), "--batch-window", "1h")
    straight = subprocess.run(_command(tmp_path / "straight", *args), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    figures = _crash_then_finish(_command(tmp_path / "crashed", *args), tmp_path / "crashed", kills=5, seed=7)
    assert figures["events"] == figures["learned"] == EVENTS and figures["restored_from"] is not None
    assert json.loads(straight.stdout.strip().splitlines()[-1])["batches"] > 4 * EVENTS // 512   # cut by time
    source = open_source("movielens-100k", data, MemoryDeadLetters(), batch_size=2000)
    probe = FeaturePipeline(default_specs(source.fields)).build(next(iter(source)))
    models = [CheckpointStore(tmp_path / run / "checkpoints").latest().trainer.model.eval()
              for run in ("straight", "crashed")]
    with torch.no_grad():
        assert torch.equal(models[0](probe), models[1](probe))
    positions = _positions(tmp_path / "crashed")
    assert len(positions) == len(set(positions)) == EVENTS
    assert sorted(positions) == sorted(_positions(tmp_path / "straight"))
    for run in ("straight", "crashed"):   # compacted: one segment per event hour that holds events
        hours = [p.parent.name for p in (tmp_path / run / "log").glob("event_hour=*/segment-*.parquet")]
        assert len(hours) == len(set(hours)) > 100


@pytest.mark.beside   # mostly waits for the group to drop each killed consumer (a session timeout)
def test_through_kafka_nothing_is_lost_or_trained_twice(tmp_path: Path, broker: str) -> None:
    data = need_real_data("movielens-100k")
    source = open_source("movielens-100k", data, MemoryDeadLetters(), batch_size=EVENTS)
    create_topic(broker, "ratings", 4)
    sink = KafkaSink(broker, "ratings")
    features = {f.name for f in source.fields}
    sink.send([replace(e, fields={k: v for k, v in e.fields.items() if k in features})   # not `rating`
               for e in next(iter(source)).events()])
    sink.send_raw(b"{broken", "x")                       # one malformed message: dead-lettered
    sink.flush()
    command = _command(tmp_path / "kafka", "--data", str(data), "--source", "kafka", "--bootstrap", broker,
                       "--topic", "ratings", "--idle-timeout", "4")
    figures = _crash_then_finish(command, tmp_path / "kafka", kills=3, seed=11)
    assert figures["events"] == figures["learned"] == EVENTS
    positions = _positions(tmp_path / "kafka")
    assert len(positions) == len(set(positions)) == EVENTS
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "check"})
    consumer.assign([TopicPartition("ratings.dead", 0, OFFSET_BEGINNING)])
    letters = [orjson.loads(m.value()) for m in consumer.consume(100, timeout=10.0) if not m.error()]
    consumer.close()
    assert letters and {letter["reason"] for letter in letters} == {"not_json"}   # once per read of it


def test_sigterm_finishes_the_chunk_checkpoints_and_exits_0(tmp_path: Path) -> None:
    command = FRESHREC + ["run", "--format", "simulator", "--limit", "5000000", "--state", str(tmp_path),
                          "--no-serve", "--chunk", "2000", "--quiet", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoints(process, tmp_path, 1)
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["stopped_by_signal"] and 0 < figures["events"] < 5_000_000
    assert figures["events"] % 2000 == 0 and figures["learned"] == figures["events"]
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    assert latest.step == figures["checkpoints"] and latest.meta["events"] == figures["events"]
