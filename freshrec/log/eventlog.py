"""`EventLog`: the durable event log, append-only Parquet segments partitioned by event hour.

This is the article's "batch storage": the engine appends every chunk it learns from, and the
offline trainer reads a time range back. `root` is a Hive-partitioned Parquet dataset
(`root/event_hour=YYYY-MM-DDTHH/segment-N.parquet`) that pyarrow.dataset, DuckDB or Spark read
as it is; see `freshrec.log.layout` for the names.

Durability follows the engine's checkpoints: `flush()` (called before each checkpoint) closes
every open segment, so whatever was appended before a checkpoint is in closed, fsynced
segments. Rows appended since are in open `.inprogress` segments, which a crash leaves behind
and the next writer deletes: the source delivers those rows again after the restore. Segments
rolled by size or age between two checkpoints are closed too; a checkpoint that stores the
number `flush()` returned can `rollback()` them after a restore, so that nothing is logged twice.
An hour's closed segments are merged into one once the hour took no rows for a whole flush
interval, and at `close()` (`freshrec.log.compact`: crash-safe, and cut back by a rollback).

A write that fails (disk full, read-only or missing directory: any OSError) is retried with a
doubling backoff, `LogRetry.attempts` times in all (about a second by default), then reported as
`LogWriteError` (an OSError), also counted in `freshrec_write_failures_total{target="log"}`.
An append takes a chunk whole or not at all: its error's `held` says which. Refused (`held`
False: no segment could be opened), the log is as before and the chunk may be appended again.
Held (`held` True: a segment's file failed), the rows are kept in memory and written into a new
segment by the next `append` or `flush` that gets through; a `flush` that cannot close its
segments raises `LogWriteError` too, so no checkpoint is taken while rows are held.

>>> import tempfile
>>> from freshrec.events import Event, EventChunk, Field, FieldKind
>>> log = EventLog.open(tempfile.mkdtemp(), [Field("genre", FieldKind.CATEGORICAL)])
>>> chunk = EventChunk.from_events([
...     Event("a", 1_700_000_100.0, "u1", "i1", fields={"genre": "drama"}, label=1.0),
...     Event("b", 1_700_000_000.0, "u2", "i2", fields={"genre": "noir"}, label=0.0)], source="api")
>>> log.append(chunk), log.flush(), log.rows, log.segments
(2, 1, 2, 1)
>>> [(c.source, c.positions.tolist(), c.table.column("user_id").to_pylist()) for c in log.read()]
[('api', [1, 0], ['u2', 'u1'])]
>>> log.close()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from freshrec._durable import WRITE_FAILURES, Backoff
from freshrec.events.event import TS, EventChunk, Field
from freshrec.events.live import conform
from freshrec.log import compact, layout
from freshrec.log.read import read_segments
from freshrec.log.segment import (
    POSITION,
    SOURCE,
    CorruptSegment,
    SegmentInfo,
    SegmentWriter,
    log_schema,
)

if TYPE_CHECKING:
    from freshrec.batch import Batch
    from freshrec.features import FeaturePipeline

__all__ = ["READ_ROWS", "EventLog", "LogRetry", "LogWriteError", "Recovery"]

READ_ROWS = 65_536
CLOSING_THREADS = 4   # segments a flush closes at once
logger = logging.getLogger(__name__)


class LogWriteError(OSError):
    """The event log could not write, after its retries. `held`: the rows of the append are kept by
    the log (written by a later append or flush); False: they were refused, the log is unchanged."""

    def __init__(self, message: str, held: bool) -> None:
        super().__init__(message)
        self.held = held


@dataclass(frozen=True)
class LogRetry:
    """How a failed write is retried: `attempts` tries in all, `initial` seconds before the second,
    doubling up to `cap`; `sleep` waits (tests pass one that does not)."""

    attempts: int = 5
    initial: float = 0.05
    cap: float = 1.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Recovery:
    """What the writer found when it took the log: open segments a crash left (`discarded`:
    deleted, their rows come again from the source), torn closed segments (`quarantined`: their
    new paths under `_quarantine/`) and segments a merge had put in another but not yet deleted
    (`replaced`: deleted now; `freshrec.log.compact`)."""

    discarded: tuple[Path, ...] = ()
    quarantined: tuple[Path, ...] = ()
    replaced: tuple[Path, ...] = ()


@dataclass
class _State:
    schema: pa.Schema
    index: dict[Path, SegmentInfo] = field(default_factory=dict)
    stamps: dict[Path, tuple[int, int]] = field(default_factory=dict)   # inode and mtime of each indexed file
    open: dict[str, SegmentWriter] = field(default_factory=dict)
    lock: int | None = None
    next_seq: int = 0
    touched: set[str] = field(default_factory=set)   # hours appended to since the last flush
    recovered: Recovery = Recovery()


def _split_hours(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """The rows of each event hour, in their order (slices of a time-ordered chunk, else a stable
    sort; no loop per row)."""
    hours = layout.hours_of(table.column(TS).to_numpy())
    steps = np.diff(hours)
    if (steps >= 0).all():
        cuts = [0, *(np.flatnonzero(steps) + 1).tolist(), len(hours)]
        for low, high in itertools.pairwise(cuts):
            yield int(hours[low]), table.slice(low, high - low)
        return
    order = np.argsort(hours, kind="stable")
    cuts = [0, *(np.flatnonzero(np.diff(hours[order])) + 1).tolist(), len(order)]
    for low, high in itertools.pairwise(cuts):
        yield int(hours[order[low]]), table.take(order[low:high])


class EventLog:
    """The event log under `root`, with the log columns: the standard ones, `fields` (typed as
    `conform` types them), `position` and `source`.

    A segment rolls (closes) once it holds `roll_bytes` or is `roll_seconds` old by `clock`;
    ages are checked at each `append`. With `retention` (seconds of event time), each `flush`
    deletes the closed segments whose newest event is that much older than the log's newest
    (`expired` counts their rows; skipped while a reader reads, as a merge is).

    One process writes a log (it holds `root/_writer.lock` from its first `append`, `flush` or
    `rollback` to `close`); any number may read meanwhile, each with an `EventLog` of its own
    (another instance in the same process reads too). An instance is used by one thread at a
    time. Taking the lock recovers from a crash: see `recovered`; `EventLog.open` takes it at once.
    """

    def __init__(self, root: str | os.PathLike[str], fields: Sequence[Field], roll_bytes: int = 64 << 20,
                 roll_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 retry: LogRetry = LogRetry(), retention: float | None = None) -> None:
        if retention is not None and not retention > 0:
            raise ValueError(f"retention must be > 0 seconds, not {retention}")
        self.root = Path(root)
        self.fields = tuple(fields)
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.clock = clock
        self.retry = retry
        self.retention = retention
        self.expired = 0   # rows deleted by the retention
        self._state: _State | None = None

    @classmethod
    def open(cls, root: str | os.PathLike[str], fields: Sequence[Field], roll_bytes: int = 64 << 20,
             roll_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic,
             retry: LogRetry = LogRetry(), retention: float | None = None) -> EventLog:
        """A log ready to write: the writer lock taken and the crash recovered (`recovered`)."""
        log = cls(root, fields, roll_bytes, roll_seconds, clock, retry, retention)
        log._writer()
        return log

    def _st(self) -> _State:
        if self._state is None:
            self._state = _State(log_schema(self.fields))
        return self._state

    def _writer(self) -> _State:
        """The state, with the writer lock held; taking it recovers from a crash."""
        state = self._st()
        if state.lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            state.lock = layout.lock(self.root)
            discarded = layout.discard_open(self.root)
            quarantined = self._refresh(state)
            parts = [seq for info in state.index.values() for seq, _ in info.parts]
            state.next_seq = max(layout.top_seq(self.root), *parts, -1) + 1   # a merge keeps no file of its parts
            state.recovered = Recovery(discarded, quarantined, self._drop_replaced(state))
            if discarded:
                logger.warning("%s: discarded %d open segments left by a crash (appended after the "
                               "last flush)", self.root, len(discarded))
        return state

    def _refresh(self, state: _State) -> tuple[Path, ...]:
        """Bring the index in line with the closed segments on disk (a file a merge replaced is read
        again); the writer moves torn ones to quarantine, a reader skips them. Returns the
        quarantined paths."""
        paths = layout.closed_segments(self.root) if self.root.is_dir() else []
        for gone in set(state.index) - set(paths):
            del state.index[gone]
        moved = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:   # deleted by a merge or a rollback since the listing
                state.index.pop(path, None)
                continue
            stamp = (stat.st_ino, stat.st_mtime_ns)
            if path in state.index and state.stamps.get(path) == stamp:
                continue
            try:
                state.index[path], state.stamps[path] = SegmentInfo.read(path), stamp
            except CorruptSegment as error:
                if state.lock is None:
                    if path.exists():   # else a merge deleted it since the listing
                        logger.warning("%s; skipped (its writer will quarantine it)", error)
                    state.index.pop(path, None)
                    continue
                moved.append(layout.quarantine(self.root, path))
                logger.warning("%s; moved to %s", error, moved[-1])
        return tuple(moved)

    @property
    def schema(self) -> pa.Schema:
        """The columns of every segment."""
        return self._st().schema

    @property
    def recovered(self) -> Recovery:
        """What taking the writer lock found (empty until this log writes)."""
        return self._st().recovered

    @property
    def rows(self) -> int:
        """Rows in closed segments."""
        return sum(s.rows for s in self._closed())

    @property
    def segments(self) -> int:
        """Closed segments."""
        return len(self._closed())

    @property
    def newest(self) -> float | None:
        """The newest event time in the closed segments (None: none)."""
        return max((s.ts_max for s in self._closed()), default=None)

    def _closed(self) -> list[SegmentInfo]:
        state = self._st()
        self._refresh(state)
        return compact.visible(sorted(state.index.values(), key=lambda s: s.seq))

    def _drop_replaced(self, state: _State) -> tuple[Path, ...]:
        """Delete the segments a merge put in another but did not delete (it crashed); their paths."""
        gone = compact.replaced(state.index.values())
        doomed = [path for path, info in state.index.items() if info.seq in gone]
        for path in doomed:
            path.unlink()
            del state.index[path]
        for parent in {path.parent for path in doomed}:
            layout.fsync_dir(parent)
        return tuple(doomed)

    def _conform(self, chunk: EventChunk) -> pa.Table:
        """The chunk's rows in the log schema; ValueError naming what is wrong with them."""
        what = f"chunk from {chunk.source!r} ({len(chunk)} rows)"
        if TS not in chunk.table.column_names:
            raise ValueError(f"{what}: no {TS!r} column; the log places events by their event time")
        if nulls := chunk.table.column(TS).null_count:
            raise ValueError(f"{what}: {nulls} rows have a null {TS!r}; the log places events by their event time")
        try:
            table = conform(chunk.table, self.fields)
        except pa.ArrowException as error:
            raise ValueError(f"{what} does not fit the log's columns: {error}") from None
        if bad := int((~np.isfinite(table.column(TS).to_numpy())).sum()):
            raise ValueError(f"{what}: {bad} rows have a {TS!r} that is not a finite number")
        return (table.append_column(POSITION, pa.array(np.asarray(chunk.positions, np.int64)))
                .append_column(SOURCE, pa.repeat(pa.scalar(chunk.source, pa.string()), len(chunk))))

    def append(self, chunk: EventChunk) -> int:
        """Write the chunk's rows to the open segments of their event hours; returns how many.
        A bad chunk (no `ts`, null or non-finite `ts`, a column that does not cast) raises
        ValueError and writes nothing; a write that keeps failing raises `LogWriteError` (see the
        module). Segments due to roll are closed afterwards."""
        table = self._conform(chunk)
        state = self._writer()
        parts = [(layout.hour_name(h), rows) for h, rows in _split_hours(table)] if table.num_rows else []
        self._retrying(lambda: [self._segment(state, hour) for hour, _ in parts], "open a segment", held=False)
        for hour, rows in parts:
            try:
                state.open[hour].write(rows)     # the rows are the segment's even when this fails
            except OSError:
                state.open[hour].broken = True
        state.touched.update(hour for hour, _ in parts)
        self._retrying(lambda: self._settle(state), "write its segments", held=True)
        return table.num_rows

    def _retrying(self, step: Callable[[], object], what: str, held: bool) -> None:
        """`step()`, tried again after an OSError as `retry` says; then `LogWriteError`."""
        backoff = Backoff(self.retry.initial, self.retry.cap)
        while True:
            try:
                step()
                return
            except OSError as error:
                WRITE_FAILURES.labels("log").inc()
                if backoff.failures + 1 >= self.retry.attempts:
                    raise LogWriteError(f"event log {self.root}: could not {what} in {self.retry.attempts} "
                                        f"tries ({type(error).__name__}: {error})", held) from error
                wait = backoff.failed(0.0)
                logger.warning("%s: could not %s (%s); retrying in %.3g s", self.root, what, error, wait)
                self.retry.sleep(wait)

    def _settle(self, state: _State) -> None:
        """Rewrite broken segments, write out full row groups, close the segments due to roll."""
        now = self.clock()
        for hour in list(state.open):
            segment = self._healthy(state, hour)
            self._io(segment, segment.spill)
            if segment.size >= self.roll_bytes or now - segment.opened >= self.roll_seconds:
                self._roll(state, hour)

    def _segment(self, state: _State, hour: str) -> SegmentWriter:
        if hour not in state.open:
            state.open[hour] = SegmentWriter.create(layout.folder(self.root, hour), state.next_seq,
                                                    state.schema, self.clock())
            state.next_seq += 1
        return state.open[hour]

    def _healthy(self, state: _State, hour: str) -> SegmentWriter:
        """The hour's open segment; a broken one is replaced by a new segment with all its rows."""
        broken = state.open[hour]
        if not broken.broken:
            return broken
        segment = SegmentWriter.create(layout.folder(self.root, hour), state.next_seq, state.schema,
                                       broken.opened)
        state.next_seq += 1
        segment.adopt(broken)
        state.open[hour] = segment
        logger.warning("%s: rewriting the rows of %s into %s", self.root, broken.path.name, segment.path.name)
        return segment

    @staticmethod
    def _io(segment: SegmentWriter, step: Callable[[], object]) -> object:
        """`step()`; an OSError before the segment's rename marks it broken (its file is suspect)."""
        try:
            return step()
        except OSError:
            segment.broken = segment.closed is None
            raise

    def _roll(self, state: _State, hour: str) -> None:
        self._roll_all(state, [hour])

    def _roll_all(self, state: _State, hours: Sequence[str]) -> None:
        """Close the open segments of `hours`, several at a time: each close waits on its own fsyncs
        (file and folder: a folder per hour), which overlap, as its Parquet encoding overlaps the
        others' (it releases the GIL). The first OSError is raised after every close has ended."""
        closing = []
        for hour in hours:
            segment = self._healthy(state, hour)
            if segment.rows:
                closing.append((hour, segment))
            else:                       # opened by an append that failed: nothing to keep
                segment.abandon()
                del state.open[hour]

        def close(segment: SegmentWriter) -> SegmentInfo | OSError:
            try:
                return self._io(segment, segment.close)
            except OSError as error:
                return error
        if len(closing) > 1:
            with ThreadPoolExecutor(min(len(closing), CLOSING_THREADS), "freshrec-log-close") as pool:
                closed = list(pool.map(close, [segment for _, segment in closing]))
        else:
            closed = [close(segment) for _, segment in closing]
        for (hour, _), info in zip(closing, closed):
            if isinstance(info, SegmentInfo):
                del state.open[hour]
                state.index[info.path] = info
        if errors := [info for info in closed if isinstance(info, OSError)]:
            raise errors[0]

    def flush(self) -> int:
        """Close every open segment, so everything appended so far is durable and readable.
        Returns the log's offset: the number of the next segment; every segment below it is
        closed. A checkpoint stores it to `rollback` to after a restore. `LogWriteError` (rows
        held) when a segment cannot be closed: take no checkpoint then. Then the segments of each
        hour appended to before the last flush but not since are merged (`freshrec.log.compact`),
        and those past the `retention` deleted."""
        state = self._writer()
        self._retrying(lambda: self._roll_all(state, list(state.open)), "close its segments", held=True)
        self._compact(state, quiet_only=True)
        self._expire(state)
        state.touched = set()
        return state.next_seq

    def _expire(self, state: _State) -> None:
        """Delete the closed segments past the retention (none while a reader reads: a later flush
        does it); a segment whose file cannot be deleted is left for the next flush."""
        if self.retention is None or not state.index:
            return
        cutoff = max(info.ts_max for info in state.index.values()) - self.retention
        doomed = [info for info in state.index.values() if info.ts_max < cutoff]
        if not doomed:
            return
        with compact.merging(self.root, 0.0) as free:
            for info in doomed if free else ():
                try:
                    info.path.unlink(missing_ok=True)
                except OSError as error:
                    logger.warning("%s: could not delete %s past the retention (%s)", self.root, info.path, error)
                    continue
                self._replace(state, [info], None)
                self.expired += info.rows
                with contextlib.suppress(OSError):   # the hour's folder, once empty
                    info.path.parent.rmdir()
            if free:
                layout.fsync_dir(self.root)

    def _compact(self, state: _State, quiet_only: bool, wait: float = 0.0) -> None:
        """Merge each hour's closed segments into one (only the hours not appended to since the last
        flush if `quiet_only`); skipped if a reader reads after `wait` seconds, counted and left as
        they are on an error."""
        hours: dict[str, list[SegmentInfo]] = {}
        for info in state.index.values():
            if not (quiet_only and info.hour in state.touched):
                hours.setdefault(info.hour, []).append(info)
        due = [segments for segments in hours.values() if len(segments) > 1]
        if not due:
            return
        with compact.merging(self.root, wait) as free:
            if not free:
                logger.info("%s: a reader is reading; merging later", self.root)
            for segments in due if free else ():
                try:
                    merged = compact.merge(segments, state.schema)
                except (OSError, pa.ArrowException) as error:   # the segments stay as they were
                    WRITE_FAILURES.labels("log").inc()
                    logger.warning("%s: could not merge %d segments of %s (%s)", self.root, len(segments),
                                   segments[0].hour, error)
                    continue
                self._replace(state, segments, merged)

    @staticmethod
    def _replace(state: _State, old: Sequence[SegmentInfo], new: SegmentInfo | None) -> None:
        for info in old:
            state.index.pop(info.path, None)
            state.stamps.pop(info.path, None)
        if new is not None:
            state.index[new.path] = new

    def rollback(self, offset: int) -> int:
        """Delete the rows of the segments numbered `offset` or above (those closed after the flush
        that returned `offset`; a merged segment is cut back to its parts below it), before
        appending again after a restore; the source delivers those rows again. Returns the
        number of rows deleted."""
        state = self._writer()
        if state.open:
            raise RuntimeError("rollback() goes before any append: this log has open segments")
        deleted = 0
        with compact.merging(self.root, wait=None):
            for info in self._closed():
                if info.seq >= offset:
                    info.path.unlink()
                    self._replace(state, [info], None)
                    deleted += info.rows
                elif any(seq >= offset for seq, _ in info.parts):
                    kept = compact.cut(info, offset, state.schema)
                    self._replace(state, [info], kept)
                    deleted += info.rows - kept.rows
                else:
                    continue
                layout.fsync_dir(info.path.parent)
        if deleted:
            logger.warning("%s: rolled back %d rows of segments from %d on", self.root, deleted, offset)
        return deleted

    def close(self, wait: float = 60.0) -> None:
        """Flush, merge every hour's segments (waiting up to `wait` seconds for the readers to finish;
        else the next writer merges them), give up the writer lock (a reader just forgets its index)."""
        if self._state is not None and self._state.lock is not None:
            self.flush()
            self._compact(self._state, quiet_only=False, wait=wait)
            os.close(self._state.lock)
        self._state = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, start: float | None = None, end: float | None = None) -> Iterator[EventChunk]:
        """Chunks of the closed segments' rows with `start <= ts < end` (epoch seconds, None:
        unbounded), in event-time order (ties in the order appended), one event hour in memory
        at a time. See `freshrec.log.read` for the chunks' columns."""
        return self._read(start, end, READ_ROWS)

    def _read(self, start: float | None, end: float | None, rows: int) -> Iterator[EventChunk]:
        with compact.reading(self.root):   # no merge while this reads
            yield from read_segments(self.root, self._closed(), self.schema, start, end, rows)

    def batches(self, pipeline: FeaturePipeline, start: float | None = None, end: float | None = None,
                batch_size: int = 512) -> Iterator[Batch]:
        """`read(start, end)` as `Batch`es of `batch_size` rows (the last of each hour may be
        shorter) built by `pipeline`: the offline trainer's input.

        >>> import tempfile
        >>> from freshrec.events import Simulator, SimulatorConfig
        >>> from freshrec.features import FeaturePipeline, default_specs
        >>> sim = Simulator(SimulatorConfig(n_users=20, n_items=10, batch_size=100, total_events=300))
        >>> with EventLog(tempfile.mkdtemp(), sim.fields) as log:
        ...     _ = [log.append(chunk) for chunk in sim]
        ...     _ = log.flush()
        ...     sizes = [len(b) for b in log.batches(FeaturePipeline(default_specs(sim.fields)), batch_size=128)]
        >>> sizes
        [128, 128, 44]
        """
        for chunk in self._read(start, end, batch_size):
            yield pipeline.build(chunk)
