"""`freshrec autoscale` on Kafka consumer lag, end to end on CPU workers: the simulator's events reach the
topic at a paced rate that ramps up (until the autoscaler has grown the group to its maximum) and then
down to a trickle (until it has shrunk it back), then stop; the group (one torchrun agent per worker,
c10d rendezvous) goes 1 -> 2 -> 3 -> 2 -> 1, ends when the topic stays idle, and across every change
nothing is lost or learned twice (every message logged once, the group's offsets at the topic's end,
a row for every id sent, in exactly one shard) while the autoscaler's server answers every request.

The phases follow what the autoscaler logged (its decisions file), never the clock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import committed_offsets, free_port, logged_messages, readme_block_commands, wait_until

from freshrec.cluster import owners
from freshrec.cluster.cuts import latest_cut, rank_root
from freshrec.engine.checkpoint import CheckpointStore
from freshrec.events.event import FieldKind
from freshrec.events.kafka import KafkaSink, create_topic, local_broker
from freshrec.events.simulator import FIELDS, Simulator, SimulatorConfig

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a broker and a worker group, waited on for minutes
TOPIC = "clicks"
PARTITIONS = 4
README = "Elastic scaling: `freshrec autoscale`"   # the section whose commands this test runs
UP_RATE, TRICKLE_RATE = 8000, 20   # events per second while the load ramps up, then down


class PacedProducer(threading.Thread):
    """Sends the simulator's events at `rate` events/s (changed from outside) until `rate` is None."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.sink, self.rate, self.sent = KafkaSink(bootstrap, TOPIC), UP_RATE, 0
        self.values: dict[str, set] = {field.name: set() for field in FIELDS if field.kind == FieldKind.CATEGORICAL}
        self.chunks = iter(Simulator(SimulatorConfig(n_users=3000, n_items=800, batch_size=20, total_events=None)))
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (rate := self.rate) is not None:
                started, count = time.monotonic(), 0
                while count < max(rate // 10, 20):   # a tenth of a second's events
                    chunk = next(self.chunks)
                    self.sink.send_table(chunk.table, chunk.kind, as_json=True)
                    for name, seen in self.values.items():
                        seen.update(chunk.column(name).to_numpy().tolist())
                    count += len(chunk)
                self.sent += count
                time.sleep(max(0.0, count / rate - (time.monotonic() - started)))
            self.sink.flush(timeout=120.0)
            self.sink = None   # the producer's connections close with it, before the broker stops
        except BaseException as error:   # seen by the test
            self.error = error


class Requests(threading.Thread):
    """Asks the server for predictions without pause once it serves a version; counts what failed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.answered, self.failed = url, threading.Event(), 0, []

    def run(self) -> None:
        body = json.dumps({"user": 1, "candidates": [1, 2, 3]}).encode()
        while not self.stop.is_set():
            request = urllib.request.Request(f"{self.url}/predict", body, {"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    self.answered += answer.status == 200
            except OSError as error:
                self.failed.append(repr(error))


def _with(args: list[str], values: dict[str, object]) -> list[str]:
    """`args` with the value after each option of `values` replaced."""
    out = list(args)
    for option, value in values.items():
        out[out.index(option) + 1] = str(value)
    return out


def _sizes(decisions: Path) -> list[int]:
    """The group's size at the start and after each change the autoscaler logged."""
    if not decisions.exists():
        return []
    lines = [json.loads(line) for line in decisions.read_text().splitlines() if line.endswith("}")]
    return ([lines[0]["current"]] + [d["desired"] for d in lines if d["desired"] != d["current"]]) if lines else []


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return json.loads(answer.read())["version"] is not None
    except OSError:
        return False


def test_the_group_follows_the_lag_up_and_down_losing_nothing(tmp_path: Path) -> None:
    state, port, gauges = tmp_path / "state", free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    with local_broker() as bootstrap:
        create_topic(bootstrap, TOPIC, PARTITIONS)
        readme = readme_block_commands(README)[0]   # the README's command, on this broker and state, quicker to decide
        command = [sys.executable, "-m", "freshrec.cli", *_with(readme, {"--bootstrap": bootstrap, "--state": state}),
                   "--idle-timeout", "10s", "--checkpoint-events", "2000", "--port", str(port), "--interval", "1s",
                   "--up-window", "3s", "--down-window", "10s", "--cooldown", "10s", "--max-step-up", "1",
                   "--max-step-down", "1", "--metrics-port", str(gauges), "--json"]
        producer, requests = PacedProducer(bootstrap), Requests(url)
        producer.start()
        autoscaler = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        decisions = state / "autoscale.jsonl"
        try:
            wait_until(lambda: _serving(url), "a served version", autoscaler, timeout=600)
            requests.start()
            wait_until(lambda: 3 in _sizes(decisions), "the group grown to 3 workers", autoscaler, timeout=900)
            assert 'freshrec_autoscale_changes_total{direction="up"} 2.0' in _text(f"http://127.0.0.1:{gauges}")
            producer.rate = TRICKLE_RATE
            wait_until(lambda: _sizes(decisions)[-1:] == [1], "the group shrunk back to 1", autoscaler, timeout=900)
            producer.rate = None
            producer.join(timeout=120)
            wait_until(lambda: (state / "figures.json").exists(), "the group's end (the topic idle)", autoscaler,
                       timeout=900)
            requests.stop.set()
            requests.join(timeout=60)
            autoscaler.send_signal(signal.SIGTERM)   # the server went on after the group's end
            out, err = autoscaler.communicate(timeout=300)
        finally:
            requests.stop.set()
            if autoscaler.poll() is None:
                autoscaler.kill()
                autoscaler.wait()
        assert autoscaler.returncode == 0, err[-4000:]
        assert producer.error is None, producer.error
        committed = committed_offsets(bootstrap, "freshrec-trainer", TOPIC)
    figures = json.loads(out.strip().splitlines()[-1])
    assert _sizes(decisions) == figures["sizes"] == [1, 2, 3, 2, 1]
    assert figures["ended"] == "stream" and figures["workers"] == 1
    logged = logged_messages(state)
    assert len(logged) == len(set(logged)) == producer.sent == committed == figures["events"]
    cut = latest_cut(state)
    ids = [table.state_dict()["ids"] for rank in range(cut["world"]) for table in
           CheckpointStore(rank_root(state, rank) / "checkpoints").load(cut["step"], continued=False)
           .trainer.model.tables.values()]
    union = np.concatenate(ids)
    # a row for each value of each categorical field sent (one table, salted by field), each in one shard
    assert len(union) == len(set(union.tolist())) == sum(len(seen) for seen in producer.values.values())
    assert bool((owners(union, cut["world"]) == 0).all())
    assert requests.failed == [] and requests.answered > 0
    assert figures["cost"]["device_seconds"]["CPU"] > 0 and 0 < figures["cost"]["saving"] < 1
    # the README's dry run on the run's readings: a higher threshold takes the group to fewer workers
    dry = _with(readme_block_commands(README)[1], {"--dry-run": decisions})
    done = subprocess.run([sys.executable, "-m", "freshrec.cli", *dry, "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout.strip().splitlines()[-1])
    assert again["readings"] == figures["decisions"] and max(again["sizes"]) <= 3
