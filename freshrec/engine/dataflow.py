"""`DataFlowEngine`: source -> (join) -> event log + online trainer -> deltas for the servers, with
checkpoints that make the training effect exactly-once.

It is a configuration of the one loop (`freshrec.engine.loop`): every `checkpoint_events` source
events (and at the end, and on a stop request) the reader closes the log's open segments and cuts
the stream; the trainer holds there and the engine saves it, the joiner and the source position
together (`CheckpointStore`), then commits the position to the source (Kafka offsets). After a crash,
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

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freshrec._durable import WriteBehind
from freshrec.batch import Batch
from freshrec.engine.checkpoint import Checkpoint, CheckpointStore
from freshrec.engine.cold_start import ColdStartMetrics
from freshrec.engine.loop import Cut, Stages, Work, chunk_scores, dead_letter_failures, publish_when_held, run_loop
from freshrec.engine.retrieval import RetrievalStage
from freshrec.engine.summary import IngestSummary
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.source import Source
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.features.content import ItemContent
from freshrec.join import Joiner
from freshrec.log import EventLog
from freshrec.models.base import OnlineModel
from freshrec.share import SharedArea, ShareWriter
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer, TrainerConfig

__all__ = ["RETRIEVAL_REGISTRY", "DataFlowEngine", "EngineConfig"]

RETRIEVAL, RETRIEVAL_REGISTRY = "retrieval", "retrieval-registry"
"""A checkpoint's part (folder) holding the two-tower's learner; the folder of its registry under the root."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """- `batch_size`: most micro-batch rows; `batch_window`: the event time a micro-batch may span,
      its users each appearing once (`Batch.sizes`; None: by size alone); `checkpoint_events`:
      source events between checkpoints;
    - `sync`: delta and snapshot publishing (`publish=False`: none, e.g. without servers);
    - `share`: the name to share the tables under in memory (`freshrec.share`; servers on this host
      attach to it), the dense weights written after every chunk learned (None: not shared);
    - `trainer`: the online trainer's settings;
    - `retrain_events` / `retrain_seconds` (event time): how often the `retrain` hook is called
      (the offline trainer's trigger; None: never);
    - `log_roll_bytes` / `log_roll_seconds`: when the event log closes a segment; `log_retention`:
      the event time it keeps (None: everything);
    - `target`: the graded column featurised as `Batch.targets` (ordinal levels; None: none)."""

    batch_size: int = 512
    batch_window: float | None = 0.001
    checkpoint_events: int = 50_000
    publish: bool = True
    retrain_events: int | None = None
    retrain_seconds: float | None = None
    sync: SyncConfig = field(default_factory=SyncConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_roll_bytes: int = 64 << 20
    log_roll_seconds: float = 300.0
    log_retention: float | None = None
    target: str | None = None
    share: str | None = None


class DataFlowEngine:
    """The whole loop in one process; state under `root`: `log/`, `checkpoints/`, `registry/` (and
    `retrieval-registry/` with a two-tower: `retrieval`, a `RetrievalStage`).

    The constructor builds nothing: `restore()` (or `run()`, which restores first when it was not)
    builds the trainer or loads it from the newest checkpoint, and takes the log's writer lock."""

    def __init__(self, source: Source, specs: Sequence[FeatureSpec], build: Callable[[], OnlineModel],
                 root: str | Path, config: EngineConfig | None = None, joiner: Joiner | None = None,
                 content: ItemContent | None = None) -> None:
        """`retrain` (set after construction) is called with the engine when a retrain is due: after
        the log is flushed, so an offline trainer reading the log sees every event learned so far.
        `on_scored` sees each chunk with the online model's scores from before learning each of its
        micro-batches (NaN in rows not learned). `content`: the items' content vectors, for `specs` that
        end with content columns."""
        self.source, self.specs, self.build = source, tuple(specs), build
        self.retrain: Callable[[DataFlowEngine], None] | None = None
        self.on_scored: Callable[[Batch, np.ndarray], None] | None = None  # each chunk, its pre-update scores
        self.publish_meta: Callable[[], dict] | None = None  # more JSON for each published version
        self.retrains = 0
        self.root = Path(root)
        self.config = config or EngineConfig()
        self.joiner = joiner
        self.pipeline = FeaturePipeline(self.specs, self.config.target, content)
        self.log = EventLog(self.root / "log", source.fields, self.config.log_roll_bytes, self.config.log_roll_seconds,
                            retention=self.config.log_retention)
        self.checkpoints = CheckpointStore(self.root / "checkpoints")
        self.registry = ModelRegistry(self.root / "registry")
        self.trainer: OnlineTrainer | None = None   # by restore()
        self.step = self.events = self.logged = self.learned = 0
        self.restored_from: int | None = None
        self.publisher: Publisher | None = None
        self.share: ShareWriter | None = None   # by run(), with `config.share`
        self.writes: WriteBehind | None = None   # checkpoints and deltas written behind the trainer, in run()
        self.retrieval: RetrievalStage | None = None   # a two-tower learning every chunk too (set before restore)
        self.cold = ColdStartMetrics()   # the scores of items' first events

    def restore(self) -> int | None:
        """Continue from the newest checkpoint, or start afresh with a new trainer (the log emptied:
        nothing in it was committed); returns the checkpoint's step or None."""
        checkpoint = self.checkpoints.latest(self.config.trainer)
        if checkpoint is None:  # nothing is committed: segments closed before a crash go too
            self.trainer = OnlineTrainer(self.build(), self.config.trainer)
            self.log.rollback(0)
            return None
        self.trainer = checkpoint.trainer
        if self.joiner is not None and checkpoint.joiner is not None:
            self.joiner.load_state_dict(checkpoint.joiner)
        self.log.rollback(int(checkpoint.meta["log"]))
        self.source.seek(checkpoint.position)
        self.step = checkpoint.step
        self.events, self.logged, self.learned = (int(checkpoint.meta[k]) for k in ("events", "logged", "learned"))
        if self.retrieval is not None:
            self._restore_retrieval(self.checkpoints.path(checkpoint.step) / RETRIEVAL)
        self.restored_from = checkpoint.step
        return checkpoint.step

    def _restore_retrieval(self, part: Path) -> None:
        """The two-tower from the checkpoint's part; one saved by a run without it starts a new one from here."""
        if part.is_dir():
            self.retrieval.restore(part)
        else:
            log.warning("the checkpoint %s holds no two-tower: a new one learns from step %d on", part.parent,
                        self.step)

    def stages(self) -> Stages:
        """The loop's configuration for this engine."""
        c = self.config
        return Stages(self.source, self.pipeline, self.trainer, c.batch_size, self.joiner, self.log,
                      c.checkpoint_events, c.retrain_events if self.retrain else None,
                      c.retrain_seconds if self.retrain else None, batch_window=c.batch_window)

    def run(self, stop: threading.Event | None = None,
            on_chunk: Callable[[DataFlowEngine, IngestSummary], None] | None = None) -> dict:
        """Process the source until it ends or `stop` is set (restoring first, where `restore` was
        not called); checkpoint; return the figures (`stage_us_per_row`: each stage's time per row
        in its own thread, `Stages.times`)."""
        stop = stop or threading.Event()
        if self.trainer is None:
            self.restore()
        self.writes = WriteBehind()
        if self.config.publish:
            self.publisher = self._publisher()
            self.publisher.meta_source = self.publish_meta
        if self.config.share is not None:
            self.share = ShareWriter(SharedArea(self.config.share), self.trainer.model, self.learned)
        if self.retrieval is not None and self.config.publish:
            self.retrieval.publish_to(ModelRegistry(self.root / RETRIEVAL_REGISTRY), self.source.fields,
                                      self.config.sync, self.writes)
        stages, summary = self.stages(), IngestSummary()

        def after(work: Work, steps: list[dict], held: bool) -> None:
            self._after(work, steps, held, stages)
            if on_chunk is not None:
                on_chunk(self, summary)
        started = time.perf_counter()
        try:
            seconds = run_loop(stages, stop, after, summary).seconds
            if self.publisher is not None:
                self.publisher.close()
            if self.retrieval is not None:
                self.retrieval.close()
        finally:
            self.writes.close()
            if self.share is not None:
                self.share.close()
        self.log.close()
        summary.seconds = time.perf_counter() - started
        rows = max(summary.rows, 1)
        return {**summary.as_dict(), **self.trainer.report(), "events": self.events, "logged": self.logged,
                "learned": self.learned, "checkpoints": self.step, "restored_from": self.restored_from,
                "retrains": self.retrains, "loop_seconds": seconds,
                "stage_us_per_row": {k: round(v / rows * 1e6, 3) for k, v in sorted(stages.times.items())},
                "published": self.publisher.published if self.publisher else None,
                "retrieval": self.retrieval.report() if self.retrieval is not None else None,
                "cold_items": self.cold.report()}

    def _publisher(self) -> Publisher:
        """The publisher of `run`, its deltas written behind the trainer."""
        return Publisher(self.registry, self.trainer.model, self.source.fields, self.config.sync, writes=self.writes)

    def _publish(self, held: bool) -> None:
        """After a chunk: publish what is due (see `publish_when_held`)."""
        publish_when_held(self.publisher, self.trainer, held)

    def _after(self, work: Work, steps: list[dict], held: bool, stages: Stages) -> None:
        """After a chunk is learned: dead letters of failed batches, the hybrid hook, the two-tower, publishing
        (at a held chunk, asking the trainer for one when due), checkpoint, retraining."""
        clock = time.perf_counter
        started = clock()
        self._after_steps(work, steps)
        self.events += work.events
        self.logged += work.logged
        if work.examples is not None:
            self.learned += len(work.examples)
            if self.publisher is not None:
                self.publisher.observe(work.examples)
            if self.retrieval is not None:
                learning = clock()
                self.retrieval.learn(work.examples)
                stages.times["retrieval"] += clock() - learning
                started += clock() - learning   # not publishing time
        if self.publisher is not None:
            self._publish(held)
        if self.share is not None and work.examples is not None:
            self.share.publish(self.learned, work.examples.entered)
        published = clock()
        stages.times["publish"] += published - started
        if work.cut is not None:
            self.checkpoint(work.cut, work.log_mark)
            stages.times["checkpoint"] += clock() - published
        if work.retrain:
            work.log_mark()   # the offline trainer reads every event learned so far from the log
            self.retrain(self)
            self.retrains += 1

    def _after_steps(self, work: Work, steps: list[dict]) -> None:
        """The hybrid hook and the cold-start metrics on each scored batch; a failed batch's rows to the source's
        dead letters."""
        dead_letter_failures(work, steps, getattr(self.source, "dead_letters", None))
        if work.whole is not None:
            scores = chunk_scores(steps)
            self.cold.update(work.whole, scores)
            if self.on_scored is not None:
                self.on_scored(work.whole, scores)

    def checkpoint(self, cut: Cut, log_mark: Callable[[], int | None]) -> None:
        """The trainer (which has learned exactly the chunks up to `cut`), the joiner's state and the
        source position at the cut in one atomic checkpoint, written behind the trainer (`writes`),
        then the position committed; dropped when the log could not be made durable up to the cut
        (`log_mark()` None: the writer waits for it)."""
        self.step += 1
        meta = {"events": self.events, "logged": self.logged, "learned": self.learned}

        def ready() -> bool:
            mark = log_mark()
            meta["log"] = mark
            return mark is not None
        parts = {RETRIEVAL: self.retrieval.capture()} if self.retrieval is not None else {}
        self.checkpoints.save_behind(Checkpoint(self.step, cut.position, self.trainer, meta, cut.joiner, parts),
                                     self.writes, ready, lambda: self.source.commit(cut.position))
