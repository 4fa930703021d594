"""The one loop: source -> (join) -> log -> features -> learn -> (publish, checkpoint), in stages.

A reader thread takes chunks from the source (`freshrec.events.with_live.WithLive` adds the events
posted to a server), joins them, appends them to the event log and featurises them into micro-batches, up to
`read_ahead` chunks ahead (while it waits for room, it calls the source's `keep_alive`, where it has one:
a Kafka consumer stays in its group); the caller's thread learns them (`OnlineTrainer.learn_stream`, where the
fused FM resolves the ids of later batches in a third thread) and runs `after` on each chunk. Every
`checkpoint_events` source events (at a chunk boundary, so concurrency never changes what is learned)
the reader cuts the stream: it makes the log durable and notes the source position and the joiner's
state (`Cut`); the trainer holds at that chunk, so `after` sees a model that has learned exactly the
chunks up to the cut. `replay`, `replay --serve`, `run`, `evaluate ab`, the benches and the Python API
are configurations of this loop.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=1000, total_events=3000))
>>> specs = default_specs(sim.fields, dim=4)
>>> stages = Stages(sim, FeaturePipeline(specs), OnlineTrainer(build_model("fm", specs)), checkpoint_events=2000)
>>> cuts = []
>>> summary = run_loop(stages, after=lambda work, steps, held: cuts.append(work.cut.position) if work.cut else None)
>>> summary.rows, summary.batches, cuts          # a cut after 2,000 events and one at the end
(3000, 6, [{'event': 2000}, {'event': 3000}])
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc

from freshrec.batch import Batch
from freshrec.engine.summary import IngestSummary
from freshrec.engine.sync import Publisher
from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import TS, EventChunk
from freshrec.features import FeaturePipeline
from freshrec.join import Joiner
from freshrec.log import EventLog, LogWriteError
from freshrec.train import OnlineTrainer
from freshrec.train.online import MicroBatched

__all__ = ["Cut", "Stages", "Work", "chunk_scores", "dead_letter_failures", "featurised", "micro_batches",
           "publish_when_held", "run_loop"]

READER_NAME, LOG_WRITER_NAME = "freshrec-reader", "freshrec-log-writer"
NO_ROWS = np.zeros(0, np.int64)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cut:
    """The stream cut after a chunk: the source position after it and the joiner's state (the
    log's mark is the chunk's `Work.flushed`)."""

    position: Any
    joiner: dict | None


@dataclass
class Work(MicroBatched):
    """One chunk through the stages (an `OnlineTrainer` unit): `events` source events read,
    `examples` what is learned (after the joiner; `logged` rows of it appended to the log), `whole`
    featurised and cut into micro-batches of `sizes` rows; `cut` at checkpoint boundaries; `retrain` when an offline
    retraining is due; `flushed` (with either) the future of the log's mark once every segment up
    to this chunk is durable (None in it: the log could not be made durable now); `idle` for an
    empty chunk (a quiet live source's tick: time to publish)."""

    events: int
    examples: EventChunk | None
    whole: Batch | None
    sizes: np.ndarray
    logged: int = 0
    cut: Cut | None = None
    retrain: bool = False
    flushed: Future | None = None
    idle: bool = False

    def log_mark(self) -> int | None:
        """Wait for the log to be durable up to this chunk; its mark (None: no log, or it failed)."""
        return self.flushed.result() if self.flushed is not None else None

    @property
    def hold(self) -> bool:
        return self.cut is not None or self.retrain or self.idle


@dataclass
class Stages:
    """What the loop runs: every part but `source` and `pipeline` is optional.

    - `trainer`: learns each micro-batch (None: read, validate and featurise only);
    - `joiner`: turns impressions and later actions into labelled examples;
    - `log`: the durable event log (appended by the reader, made durable at each cut);
    - `checkpoint_events`: source events between cuts, and one at the end (None: no cuts);
    - `retrain_events` / `retrain_seconds` (event time): how often `Work.retrain` is set (after a
      log flush, so an offline trainer reading the log sees every event learned so far);
    - `read_ahead`: chunks the reader may be ahead of the trainer;
    - `batch_window`: a micro-batch also ends before a row this much event time after its first
      (`Batch.split`; None: by `batch_size` alone)."""

    source: Iterable[EventChunk]
    pipeline: FeaturePipeline
    trainer: OnlineTrainer | None = None
    batch_size: int = 512
    joiner: Joiner | None = None
    log: EventLog | None = None
    checkpoint_events: int | None = None
    retrain_events: int | None = None
    retrain_seconds: float | None = None
    read_ahead: int = 4
    times: Counter = field(default_factory=Counter)
    """Seconds per stage, each in its own thread: `first_read` (the wait for the source's first chunk),
    `read`, `join`, `features` (the reader's), `log` (the log writer's), `learn` (the loop's wait for
    the next chunk learned, so its wait for the reading stages too) and `after` (the loop's; the
    engine's `publish`, `checkpoint` and `retrieval` are parts of it)."""
    batch_window: float | None = None


class _LogWriter:
    """The log stage: appends chunks to the event log in its own thread, in the order given (the
    Parquet encoding releases the GIL, so it runs beside reading and featurising). A refused append
    (disk full, folder gone) is tried again with backoff until it succeeds or the loop stops: the
    stream waits (the reader calls `waiting` meanwhile), nothing is lost. `flush()` returns a future
    of the log's mark."""

    def __init__(self, log: EventLog, times: Counter, depth: int, gone: threading.Event,
                 waiting: Callable[[], None]) -> None:
        self.log, self.times, self.gone, self.waiting = log, times, gone, waiting
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=LOG_WRITER_NAME, daemon=True)
        self.thread.start()

    def append(self, examples: EventChunk) -> None:
        self._put(examples)

    def flush(self) -> Future:
        done: Future = Future()
        self._put(done)
        return done

    def close(self) -> None:
        """Write what is queued, end the thread; raise its error, if it had one."""
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self.waiting()

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                started = time.perf_counter()
                if isinstance(item, Future):
                    item.set_result(self._flush())
                else:
                    self._append(item)
                self.times["log"] += time.perf_counter() - started
        except BaseException as error:  # raised in the reader at its next append, or by close()
            self.error = error
            while not self.queue.empty():   # fail the futures waiting behind it
                if isinstance(late := self.queue.get(), Future):
                    late.set_exception(error)

    def _append(self, examples: EventChunk) -> None:
        wait = 0.5
        while True:
            try:
                self.log.append(examples)
                return
            except LogWriteError as error:
                if error.held:   # the log keeps the rows and writes them with a later append
                    return
                logger.warning("event log refused %d rows (%s); trying again in %.1f s", len(examples), error, wait)
                if self.gone.wait(wait):
                    raise
                wait = min(2 * wait, 30.0)

    def _flush(self) -> int | None:
        try:
            return self.log.flush()
        except LogWriteError as error:
            logger.warning("no checkpoint: the event log could not be made durable (%s)", error)
            return None


class _Reader:
    """The reader stage (its own thread): chunks -> join -> log -> features -> `Work`."""

    def __init__(self, stages: Stages, stop: threading.Event, gone: threading.Event,
                 log: _LogWriter | None) -> None:
        self.s, self.stop, self.gone, self.log = stages, stop, gone, log   # gone: the consumer left
        self.since_cut = self.since_retrain = 0
        self.retrain_ts: float | None = None

    def __iter__(self) -> Iterator[Work]:
        s, clock = self.s, time.perf_counter
        mark, stage = clock(), "first_read"   # the wait for the source's first chunk (a Kafka group join)
        for chunk in s.source:
            started = clock()
            s.times[stage] += started - mark
            stage = "read"
            if not chunk.events_read:
                yield Work(0, None, None, NO_ROWS, idle=True)
            else:
                examples = s.joiner.process(chunk) if s.joiner is not None else chunk
                s.times["join"] += clock() - started
                work = self.work(chunk, examples)
                if self.since_cut >= (s.checkpoint_events or float("inf")):
                    work.cut = self.cut()
                work.retrain = self.retrain_due(chunk)
                if (work.cut is not None or work.retrain) and self.log is not None:
                    work.flushed = self.log.flush()
                yield work
            if self.stop.is_set() or self.gone.is_set():
                break
            mark = clock()
        else:
            if s.joiner is not None and (rest := s.joiner.flush()) is not None and len(rest):
                yield self.work(None, rest)
        if s.checkpoint_events is not None:
            flushed = self.log.flush() if self.log is not None else None
            yield Work(0, None, None, NO_ROWS, cut=self.cut(), flushed=flushed)

    def work(self, chunk: EventChunk | None, examples: EventChunk | None) -> Work:
        """Log and featurise `examples` (from `chunk`, None for the joiner's last examples)."""
        s, clock, events = self.s, time.perf_counter, chunk.events_read if chunk is not None else 0
        self.since_cut += events
        if examples is None or not len(examples):
            return Work(events, None, None, NO_ROWS)
        started = clock()
        if self.log is not None:
            self.log.append(examples)
        whole = s.pipeline.build(examples)
        given = chunk is not None and chunk.parts is not None and examples is chunk
        sizes = chunk.parts if given else whole.sizes(s.batch_size, s.batch_window)
        s.times["features"] += clock() - started
        return Work(events, examples, whole, sizes, len(examples) if self.log is not None else 0)

    def cut(self) -> Cut:
        """The cut after the last chunk read."""
        s = self.s
        position = s.source.position() if hasattr(s.source, "position") else None
        joiner = s.joiner.state_dict() if s.joiner is not None else None
        self.since_cut = 0
        return Cut(position, joiner)

    def retrain_due(self, chunk: EventChunk) -> bool:
        """Whether `retrain_events` events or `retrain_seconds` of event time passed since the last
        retraining (the log is then flushed, `Work.flushed`)."""
        s = self.s
        if s.retrain_events is None and s.retrain_seconds is None:
            return False
        self.since_retrain += len(chunk)
        latest = float(pc.max(chunk.table.column(TS)).as_py() or 0.0)
        self.retrain_ts = latest if self.retrain_ts is None else self.retrain_ts
        by_volume = s.retrain_events is not None and self.since_retrain >= s.retrain_events
        by_time = s.retrain_seconds is not None and latest - self.retrain_ts >= s.retrain_seconds
        if not (by_volume or by_time):
            return False
        self.since_retrain, self.retrain_ts = 0, latest
        return True


def _ahead(items: Iterable, depth: int, gone: threading.Event, waiting: Callable[[], None]) -> Iterator:
    """`items` produced in a reader thread, at most `depth` ahead; its error is raised here. While
    the queue is full the reader calls `waiting` every 0.1 s. When the consumer leaves, `gone` is
    set (the producer stops offering) and the thread joined."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def offer(item: Any) -> bool:
        while not gone.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                waiting()
        return False

    def work() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(end)
        except BaseException as error:  # raised again in the consumer's thread
            offer(error)

    thread = threading.Thread(target=work, name=READER_NAME, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                if thread.is_alive():
                    continue
                return   # the producer left without an end: the consumer had gone
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        gone.set()
        thread.join()


def _keep_alive(source: Iterable[EventChunk]) -> Callable[[], None]:
    """What the reader calls while a stage ahead has no room for its work: the source's
    `keep_alive` (a Kafka consumer stays in its group without fetching), or nothing."""
    return getattr(source, "keep_alive", None) or (lambda: None)


def _learned(stages: Stages, works: Iterable[Work]) -> Iterator[tuple[Work, list[dict], bool]]:
    if stages.trainer is None:
        return ((work, [], True) for work in works)
    return stages.trainer.learn_stream(works)


def run_loop(stages: Stages, stop: threading.Event | None = None,
             after: Callable[[Work, list[dict], bool], None] | None = None,
             summary: IngestSummary | None = None) -> IngestSummary:
    """Run the stages until the source ends or `stop` is set (then
    the chunks already read are learned too); `after(work, steps, held)` runs on each chunk once
    it is learned (`steps`: the trainer's figures per micro-batch; `held`: nothing of a later chunk
    has touched the model), once `summary` (a new one if None) counts it. Returns the summary, with
    `seconds`; `stages.times` holds seconds per stage."""
    stop = stop or threading.Event()
    summary, started, clock = summary or IngestSummary(), time.perf_counter(), time.perf_counter
    gone, waiting = threading.Event(), _keep_alive(stages.source)
    writer = (_LogWriter(stages.log, stages.times, 2 * stages.read_ahead, gone, waiting)
              if stages.log is not None else None)
    reading = _ahead(_Reader(stages, stop, gone, writer), stages.read_ahead, gone, waiting)
    stream = _learned(stages, reading)
    mark = clock()
    try:
        for work, steps, held in stream:
            learned = clock()
            stages.times["learn"] += learned - mark
            if work.whole is not None:
                summary.add(work.whole, len(work.sizes))
            if after is not None:
                after(work, steps, held)
            mark = clock()
            stages.times["after"] += mark - learned
    finally:   # on an error: the reader stops, then the trainer's worker, the reader's queue, the log
        gone.set()
        stream.close()
        reading.close()
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def publish_when_held(publisher: Publisher, trainer: OnlineTrainer, held: bool) -> None:
    """Publish what is due where the trainer holds; elsewhere ask it to hold at its next chunk."""
    if publisher.due():
        if held:
            publisher.maybe_publish()
        else:
            trainer.hold()


def chunk_scores(steps: list[dict]) -> np.ndarray:
    """A learned chunk's scores from before each micro-batch was learned, in row order (float32;
    NaN in the rows of micro-batches that were not learned: failed or skipped)."""
    return np.concatenate([np.zeros(0, np.float32)] + [
        step["predictions"].numpy() if step["predictions"] is not None else np.full(step["rows"], np.nan, np.float32)
        for step in steps])


def dead_letter_failures(work: Work, steps: list[dict], sink: DeadLetterSink | None) -> int:
    """Send the rows of the work's batches that the trainer could not learn to `sink`, one letter
    per row (reason `not_learned`, the error as detail, the row as JSON); returns how many rows."""
    start, failed = 0, 0
    for step in steps:
        if step.get("error") is not None and work.examples is not None:
            rows = work.examples.slice(start, start + step["rows"])
            failed += len(rows)
            if sink is not None:
                sink.put_many(DeadLetter(rows.source, int(p), "not_learned", step["error"], orjson.dumps(row).decode())
                              for p, row in zip(rows.positions, rows.table.to_pylist()))
        start += step["rows"]
    return failed


def featurised(source: Iterable[EventChunk], pipeline: FeaturePipeline, batch_size: int = 512,
               read_ahead: int = 4, batch_window: float | None = None) -> Iterator[Work]:
    """The loop's reading stages alone: the stream's chunks featurised and cut into micro-batches
    (`Work.whole`, `Work.sizes`) in the reader thread ahead of the caller (for consumers that are
    not the loop's trainer, e.g. `evaluate ab`)."""
    stages = Stages(source, pipeline, batch_size=batch_size, read_ahead=read_ahead, batch_window=batch_window)
    gone = threading.Event()
    for work in _ahead(_Reader(stages, threading.Event(), gone, None), read_ahead, gone, _keep_alive(source)):
        if work.whole is not None:
            yield work


def micro_batches(source: Iterable[EventChunk], pipeline: FeaturePipeline, batch_size: int = 512,
                  read_ahead: int = 4, batch_window: float | None = None) -> Iterator[Batch]:
    """Every micro-batch of the stream, in order (`featurised`, cut)."""
    for work in featurised(source, pipeline, batch_size, read_ahead, batch_window):
        yield from work.batches
