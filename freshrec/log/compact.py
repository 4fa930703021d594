"""Merging the closed segments of one event hour into one (the event log's compaction), and
cutting a merged segment back on a rollback.

An hour gets several segments when its rows come on both sides of a flush (each checkpoint
closes the open segments) or when a segment rolls by size or age; a replay of a long history
would otherwise leave many small files per hour. `EventLog.flush` merges the segments of each
hour that took no rows since the flush before (so the hour a live stream is writing is merged
once, after it goes quiet, not at every checkpoint), and `EventLog.close` merges every hour:

1. their rows, in segment order, go to `.segment-<a>.parquet.inprogress`, `a` the smallest number
   (a crash here leaves an open segment, which the next writer deletes);
2. that file is renamed over `segment-<a>.parquet` (atomic); its footer lists the merged segments
   with their row counts (`SegmentInfo.parts`), so from this moment every reader skips the others
   (`visible`);
3. the others are deleted (a crash before this: the next writer deletes them, `Recovery.replaced`).

A checkpoint names a point in the log by segment number (`EventLog.flush`); a rollback to number
`n` cuts a merged segment that holds parts numbered `n` or more back to the rows of the parts
before `n` (`cut`: they come first in it), so merging never changes what a restore keeps.
Readers hold a shared lock on `_readers.lock` while they read (`reading`); a merge or a cut runs
only when it can take that lock exclusively (`merging`), so no read sees a segment change under
it: a flush that finds a reader leaves the merge to a later flush, `close` waits for the readers
(up to `EventLog.close`'s `wait`), a rollback waits as long as it takes.

>>> import tempfile
>>> from freshrec.log.segment import SegmentWriter, log_schema
>>> root, schema = Path(tempfile.mkdtemp()), log_schema([])
>>> def segment(seq, ts):
...     writer = SegmentWriter.create(root / "event_hour=2023-11-14T22", seq, schema, opened=0.0)
...     writer.write(pa.table({"ts": [ts], "user_id": ["u"], "item_id": ["i"], "label": pa.array([1], pa.float32()),
...                            "position": [seq], "source": ["sim"]}, schema=schema))
...     return writer.close()
>>> merged = merge([segment(3, 1699999300.0), segment(5, 1699999200.0)], schema)
>>> merged.path.name, merged.rows, merged.parts, merged.positions, sorted(p.name for p in root.rglob("*.parquet"))
('segment-000000000003.parquet', 2, ((3, 1), (5, 1)), {'sim': (3, 5)}, ['segment-000000000003.parquet'])
>>> kept = cut(merged, 5, schema)
>>> kept.rows, kept.parts, kept.ts_max
(1, (), 1699999300.0)
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.log.layout import fsync_dir
from freshrec.log.segment import SegmentInfo, SegmentWriter

__all__ = ["READERS_LOCK", "cut", "merge", "merging", "reading", "replaced", "visible"]

READERS_LOCK = "_readers.lock"


def replaced(segments: Iterable[SegmentInfo]) -> set[int]:
    """The numbers of segments that a merged segment among `segments` holds (its own excepted)."""
    return {seq for s in segments for seq, _ in s.parts if seq != s.seq}


def visible(segments: Sequence[SegmentInfo]) -> list[SegmentInfo]:
    """`segments` without those a merged one holds (left by a merge that crashed before deleting them)."""
    gone = replaced(segments)
    return [s for s in segments if s.seq not in gone]


def _lock(root: Path, mode: int) -> int | None:
    fd = os.open(root / READERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


@contextmanager
def reading(root: Path) -> Iterator[None]:
    """Hold the readers' shared lock (no merge runs meanwhile); nothing to hold if `root` is not there."""
    fd = _lock(root, fcntl.LOCK_SH) if root.is_dir() else None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


@contextmanager
def merging(root: Path, wait: float | None = 0.0) -> Iterator[bool]:
    """Whether segments may change now: no reader holds the lock (`wait`: seconds to wait for the
    readers to finish, None: as long as it takes). Held until the block ends."""
    deadline = None if wait is None else time.monotonic() + wait
    while (fd := _lock(root, fcntl.LOCK_EX | fcntl.LOCK_NB)) is None:
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _rewrite(first: SegmentInfo, tables: Iterable[pa.Table], schema: pa.Schema,
             parts: tuple[tuple[int, int], ...]) -> SegmentInfo:
    """`tables` written over `first`'s file (through an open segment and an atomic rename)."""
    writer = SegmentWriter.create(first.path.parent, first.seq, schema, opened=0.0)
    try:
        for table in tables:
            writer.write(table)
        writer.parts = parts
        return writer.close()
    except (OSError, pa.ArrowException):
        if writer.closed is None:
            writer.abandon()
        raise


def _parts(segment: SegmentInfo) -> tuple[tuple[int, int], ...]:
    return segment.parts or ((segment.seq, segment.rows),)


def merge(segments: Sequence[SegmentInfo], schema: pa.Schema) -> SegmentInfo:
    """Merge closed segments of one hour (in segment order) into the first one's file; returns
    its figures. OSError before the rename leaves them as they were."""
    ordered = sorted(segments, key=lambda s: s.seq)
    info = _rewrite(ordered[0], (pq.read_table(s.path, schema=schema) for s in ordered), schema,
                    tuple(part for s in ordered for part in _parts(s)))
    for segment in ordered[1:]:
        segment.path.unlink(missing_ok=True)
    fsync_dir(ordered[0].path.parent)
    return info


def cut(segment: SegmentInfo, offset: int, schema: pa.Schema) -> SegmentInfo:
    """A merged segment cut back to the rows of its parts numbered below `offset` (at least its own)."""
    kept = tuple(part for part in segment.parts if part[0] < offset)
    rows = sum(n for _, n in kept)
    return _rewrite(segment, [pq.read_table(segment.path, schema=schema).slice(0, rows)], schema,
                    kept if len(kept) > 1 else ())
