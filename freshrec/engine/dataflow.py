"""`DataFlowEngine`: source -> (join) -> event log + online trainer -> deltas for the servers, with
checkpoints that make the training effect exactly-once.

Every `checkpoint_events` source events (and at the end, and on a stop request) the engine closes
the log's open segments, saves the trainer, the joiner and the source position together
(`CheckpointStore`), then commits the position to the source (Kafka offsets). After a crash,
`restore()` loads the newest checkpoint, rolls the log back to it and seeks the source there: the
events after it are read, logged and learned again, once. Chunks are learned whole (cut into
micro-batches of `batch_size`), so a restored run meets the same batches as an uninterrupted one.

>>> import tempfile
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import default_specs
>>> from freshrec.models import build_model
>>> sim = Simulator(SimulatorConfig(batch_size=500, total_events=2000))
>>> specs = default_specs(sim.fields, dim=4)
>>> engine = DataFlowEngine(sim, specs, lambda: build_model("fm", specs), tempfile.mkdtemp(),
...                         EngineConfig(checkpoint_events=1000))
>>> figures = engine.run()
>>> figures["events"], figures["checkpoints"], figures["logged"], engine.log.rows
(2000, 3, 2000, 2000)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from freshrec.batch import Batch
from freshrec.engine.checkpoint import Checkpoint, CheckpointStore
from freshrec.engine.ingest import IngestSummary
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.event import TS, EventChunk
from freshrec.events.source import Source
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.join import Joiner
from freshrec.log import EventLog
from freshrec.models.base import OnlineModel
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer, TrainerConfig

__all__ = ["DataFlowEngine", "EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """- `batch_size`: micro-batch rows; `checkpoint_events`: source events between checkpoints;
    - `sync`: delta and snapshot publishing (`publish=False`: none, e.g. without servers);
    - `trainer`: the online trainer's settings;
    - `retrain_events` / `retrain_seconds` (event time): how often the `retrain` hook is called
      (the offline trainer's trigger; None: never);
    - `log_roll_bytes` / `log_roll_seconds`: when the event log closes a segment;
    - `target`: the graded column featurised as `Batch.targets` (ordinal levels; None: none)."""

    batch_size: int = 512
    checkpoint_events: int = 50_000
    publish: bool = True
    retrain_events: int | None = None
    retrain_seconds: float | None = None
    sync: SyncConfig = field(default_factory=SyncConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_roll_bytes: int = 64 << 20
    log_roll_seconds: float = 300.0
    target: str | None = None


class DataFlowEngine:
    """The whole loop in one process; state under `root`: `log/`, `checkpoints/`, `registry/`."""

    def __init__(self, source: Source, specs: Sequence[FeatureSpec], build: Callable[[], OnlineModel],
                 root: str | Path, config: EngineConfig | None = None, joiner: Joiner | None = None) -> None:
        """`retrain` (set after construction) is called with the engine when a retrain is due: after
        the log is flushed, so an offline trainer reading the log sees every event learned so far.
        `on_batch` sees each micro-batch with the online model's scores from before learning it."""
        self.source, self.specs, self.build = source, tuple(specs), build
        self.retrain: Callable[[DataFlowEngine], None] | None = None
        self.on_batch: Callable[[Batch, np.ndarray], None] | None = None  # each batch, its pre-update scores
        self.publish_meta: Callable[[], dict] | None = None  # more JSON for each published version
        self.retrains = 0
        self._retrain_events, self._retrain_ts = 0, None
        self.root = Path(root)
        self.config = config or EngineConfig()
        self.joiner = joiner
        self.pipeline = FeaturePipeline(self.specs, self.config.target)
        self.log = EventLog.open(self.root / "log", source.fields, self.config.log_roll_bytes,
                                 self.config.log_roll_seconds)
        self.checkpoints = CheckpointStore(self.root / "checkpoints")
        self.registry = ModelRegistry(self.root / "registry")
        self.trainer = OnlineTrainer(build(), self.config.trainer)
        self.step = self.events = self.logged = self.learned = 0
        self.restored_from: int | None = None
        self.publisher: Publisher | None = None

    def restore(self) -> int | None:
        """Continue from the newest checkpoint, or start afresh (the log emptied: nothing in it was
        committed); returns the checkpoint's step or None."""
        checkpoint = self.checkpoints.latest()
        if checkpoint is None:  # nothing is committed: segments closed before a crash go too
            self.log.rollback(0)
            return None
        self.trainer = checkpoint.trainer
        if self.joiner is not None and checkpoint.joiner is not None:
            self.joiner.load_state_dict(checkpoint.joiner)
        self.log.rollback(int(checkpoint.meta["log"]))
        self.source.seek(checkpoint.position)
        self.step = checkpoint.step
        self.events, self.logged, self.learned = (int(checkpoint.meta[k]) for k in ("events", "logged", "learned"))
        self.restored_from = checkpoint.step
        return checkpoint.step

    def run(self, stop: threading.Event | None = None,
            on_chunk: Callable[[DataFlowEngine, IngestSummary], None] | None = None) -> dict:
        """Process the source until it ends or `stop` is set; checkpoint; return the figures."""
        stop = stop or threading.Event()
        summary, start = IngestSummary(), time.perf_counter()
        if self.config.publish:
            self.publisher = Publisher(self.registry, self.trainer.model, self.source.fields, self.config.sync)
            self.publisher.meta_source = self.publish_meta
        since_checkpoint = 0
        for chunk in self.source:
            self._learn(self.joiner.process(chunk) if self.joiner is not None else chunk, summary)
            self.events += len(chunk)
            since_checkpoint += len(chunk)
            if since_checkpoint >= self.config.checkpoint_events:
                self.checkpoint()
                since_checkpoint = 0
            self._maybe_retrain(chunk)
            if on_chunk is not None:
                on_chunk(self, summary)
            if stop.is_set():
                break
        else:
            if self.joiner is not None:  # the stream ended: close every window
                self._learn(self.joiner.flush(), summary)
        self.checkpoint()
        if self.publisher is not None:
            self.publisher.publish_full()
        self.log.close()
        summary.seconds = time.perf_counter() - start
        return {**summary.as_dict(), **self.trainer.report(), "events": self.events, "logged": self.logged,
                "learned": self.learned, "checkpoints": self.step, "restored_from": self.restored_from,
                "retrains": self.retrains,
                "published": self.publisher.published if self.publisher else None}

    def _maybe_retrain(self, chunk: EventChunk) -> None:
        """Call the `retrain` hook when `retrain_events` events or `retrain_seconds` of event time
        passed since the last call."""
        c = self.config
        if self.retrain is None or (c.retrain_events is None and c.retrain_seconds is None):
            return
        self._retrain_events += len(chunk)
        latest = float(pc.max(chunk.table.column(TS)).as_py() or 0.0) if len(chunk) else 0.0
        self._retrain_ts = latest if self._retrain_ts is None else self._retrain_ts
        by_volume = c.retrain_events is not None and self._retrain_events >= c.retrain_events
        by_time = c.retrain_seconds is not None and latest - self._retrain_ts >= c.retrain_seconds
        if by_volume or by_time:
            self.log.flush()
            self.retrain(self)
            self.retrains += 1
            self._retrain_events, self._retrain_ts = 0, latest

    def _learn(self, examples: EventChunk | None, summary: IngestSummary) -> None:
        if examples is None or not len(examples):
            return
        self.logged += self.log.append(examples)
        whole = self.pipeline.build(examples)
        parts = whole.split(self.config.batch_size)
        summary.add(whole, len(parts))
        for batch in parts:
            scored = self.trainer.learn(batch)["predictions"]
            if self.on_batch is not None and scored is not None:
                self.on_batch(batch, scored.numpy())
        self.learned += len(examples)
        if self.publisher is not None:
            self.publisher.observe(examples)
            self.publisher.maybe_publish()

    def checkpoint(self) -> None:
        """Log durable, then trainer + joiner + position in one atomic checkpoint, then commit."""
        mark = self.log.flush()
        position = self.source.position()
        self.step += 1
        meta = {"log": mark, "events": self.events, "logged": self.logged, "learned": self.learned}
        joiner = self.joiner.state_dict() if self.joiner is not None else None
        self.checkpoints.save(Checkpoint(self.step, position, self.trainer, meta, joiner))
        self.source.commit(position)
