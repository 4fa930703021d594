"""Soak: MovieLens events stream into Kafka for `FRESHREC_SOAK_SECONDS` (120 by default; longer by
setting it), one message in a hundred malformed, while `freshrec run` consumes them and is SIGKILLed
twice (each time once new checkpoints are on disk, never by the clock); at the end nothing is lost,
nothing is learned twice, and every malformed message is in the dead-letter topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from conftest import need_real_data, wait_until

from freshrec.engine.checkpoint import CheckpointStore
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.kafka import KafkaSink, create_topic
from freshrec.log import EventLog

pytestmark = [pytest.mark.integration, pytest.mark.soak]
SECONDS = float(os.environ.get("FRESHREC_SOAK_SECONDS", "120"))
MALFORMED = (b'{"broken %d', b'[%d]', b'{"user": "u%d", "item": "i", "label": 7}',
             b'{"user": "u%d", "item": "i", "colour": 1}', b'{"user": "u%d", "item": "i", "ts": 1e300}')


class _Producer(threading.Thread):
    """Produces `events` evenly over SECONDS, one malformed message (each unique) after every 99
    good ones; holds the last tenth back until `release` is set, so the kills land mid-stream."""

    def __init__(self, broker: str, events: list) -> None:
        super().__init__(name="soak-producer")
        self.sink, self.events = KafkaSink(broker, "soak"), events
        self.bad: list[bytes] = []
        self.release, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        per_tick, held_back, since_bad = max(1, int(len(self.events) / SECONDS / 10)), len(self.events) * 9 // 10, 0
        for start in range(0, len(self.events), per_tick):
            if start >= held_back:
                self.release.wait()
            batch = self.events[start:start + per_tick]
            self.sink.send(batch)
            since_bad += len(batch)
            while since_bad >= 99:
                self.bad.append(MALFORMED[len(self.bad) % len(MALFORMED)] % len(self.bad))
                self.sink.send_raw(self.bad[-1], "bad")
                since_bad -= 99
            if self.stop.wait(0.1):
                break
        self.sink.flush()


def _wait_for_checkpoints(process: subprocess.Popen, state: Path, count: int) -> None:
    store = CheckpointStore(state / "checkpoints")
    target = max(store.steps(), default=0) + count
    wait_until(lambda: max(store.steps(), default=0) >= target, f"checkpoint {target} in {state}", process)


def test_a_stream_with_malformed_messages_survives_two_sigkills_exactly_once(tmp_path: Path, broker: str) -> None:
    data = need_real_data("movielens-100k")
    source = open_source("movielens-100k", data, MemoryDeadLetters(), batch_size=100_000)
    features = {f.name for f in source.fields}
    events = [replace(e, fields={k: v for k, v in e.fields.items() if k in features})   # not `rating`
              for e in next(iter(source)).events()]
    create_topic(broker, "soak", 4)
    producer = _Producer(broker, events)
    producer.start()
    state = tmp_path / "state"
    command = [sys.executable, "-m", "freshrec.cli", "run", "--state", str(state), "--no-serve", "--data", str(data),
               "--source", "kafka", "--bootstrap", broker, "--topic", "soak", "--idle-timeout", "10",
               "--checkpoint-events", "5000", "--offline-interval", "off", "--quiet", "--json"]
    try:
        for _ in range(2):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_for_checkpoints(process, state, 2)
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()
        producer.release.set()
        producer.join()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        producer.release.set()
        producer.stop.set()
        producer.join()
    assert done.returncode == 0, done.stderr
    figures = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert figures["events"] == figures["learned"] == len(events) and figures["restored_from"]
    positions = [int(p) for chunk in EventLog(state / "log", []).read() for p in chunk.positions]
    assert len(positions) == len(set(positions)) == len(events)
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "check"})
    consumer.assign([TopicPartition("soak.dead", 0, OFFSET_BEGINNING)])
    letters, deadline = [], time.monotonic() + 60.0
    bad = {m.decode() for m in producer.bad}
    while {letter["raw"] for letter in letters} != bad and time.monotonic() < deadline:
        letters += [orjson.loads(m.value()) for m in consumer.consume(1000, timeout=1.0) if not m.error()]
    consumer.close()
    assert {letter["raw"] for letter in letters} == bad   # each at least once: once per read of it
    assert len(bad) == len(events) // 99
