"""One segment of the event log: a Parquet file of rows from one event hour.

`SegmentWriter` appends to an open segment (rows buffered into row groups of `ROW_GROUP_ROWS`) and
closes it: footer with the segment's figures as key-value metadata, fsync, rename from
`.segment-N.parquet.inprogress` to `segment-N.parquet`, fsync of the folder. It keeps every row it
took until it is closed, so that a segment whose file failed (disk full) can be written again
whole into a new file (`adopt`): memory up to the log's `roll_bytes` per open segment. `SegmentInfo`
holds the figures, read back from the footer alone:

| key | value |
|---|---|
| `freshrec.rows` | row count |
| `freshrec.ts_min`, `freshrec.ts_max` | smallest and largest `ts` (repr of the float: exact) |
| `freshrec.positions` | JSON `{source: [min position, max position]}` |
| `freshrec.parts` | JSON `[[segment, rows], ...]`: the segments a merge put in this one, in order (`log.compact`) |

>>> import tempfile
>>> schema = log_schema([])
>>> folder = Path(tempfile.mkdtemp()) / "event_hour=2023-11-14T22"
>>> writer = SegmentWriter.create(folder, 3, schema, opened=0.0)
>>> rows = pa.table({"ts": [5.0, 2.0], "user_id": ["u", "v"], "item_id": ["i", "i"],
...                  "label": pa.array([1, 0], pa.float32()), "position": [10, 11],
...                  "source": ["sim", "sim"]}, schema=schema)
>>> writer.write(rows)
>>> info = writer.close()
>>> info.path.name, info.rows, info.ts_min, info.ts_max, info.positions, info.hour
('segment-000000000003.parquet', 2, 2.0, 5.0, {'sim': (10, 11)}, '2023-11-14T22')
>>> SegmentInfo.read(info.path) == info
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrec.events.event import TS, Field
from freshrec.events.live import conform
from freshrec.log.layout import PARTITION, closed_name, fsync_dir, open_name, seq_of

__all__ = ["COMPRESSION", "POSITION", "ROW_GROUP_ROWS", "SOURCE", "CorruptSegment", "SegmentInfo",
           "SegmentWriter", "log_schema"]

POSITION, SOURCE = "position", "source"
ROW_GROUP_ROWS = 65_536
WRITE_BUFFER = 1 << 16
"""Bytes of the buffer that gathers a segment's many small writes into one syscall. It is allocated
when the segment opens, and a replay of historical events opens one segment per event hour between
two flushes (MovieLens-100k: about 450). A MiB took 2.8 ms to allocate at each open, and `freshrec
run` on MovieLens-100k peaked at 1.3 GB against 0.74 GB with 64 KiB, its loop a quarter slower."""
COMPRESSION = "lz4"   # with plain encoding: 1.6x cheaper to write than zstd + dictionaries, files 2x larger
# Column statistics only where a reader prunes by them (time ranges, positions): min/max of every
# string column cost more than the encoding and compression together.
_ROWS, _TS_MIN, _TS_MAX, _POSITIONS, _PARTS = (f"freshrec.{k}" for k in ("rows", "ts_min", "ts_max", "positions",
                                                                          "parts"))


class CorruptSegment(ValueError):
    """A closed segment whose footer cannot be read (torn, truncated) or has no freshrec figures."""


def log_schema(fields: Sequence[Field]) -> pa.Schema:
    """The schema of every segment: the standard columns and `fields` as `conform` types them,
    then `position` (int64) and `source` (string). ValueError for a field named like a log column.

    >>> log_schema([]).names
    ['ts', 'user_id', 'item_id', 'label', 'position', 'source']
    """
    if clash := sorted({f.name for f in fields} & {POSITION, SOURCE, PARTITION}):
        raise ValueError(f"field {clash[0]!r} clashes with a column of the event log "
                         f"({POSITION}, {SOURCE}, {PARTITION} are reserved)")
    columns = conform(pa.table({TS: pa.array([], pa.float64())}), fields).schema
    return columns.append(pa.field(POSITION, pa.int64())).append(pa.field(SOURCE, pa.string()))


@dataclass(frozen=True)
class SegmentInfo:
    """The figures of a closed segment: where it is, its rows, its `ts` range, per source the range
    of source positions it holds, and the segments a merge put in it (`parts`: number and row count
    of each, in order, its own number first; empty if it was written whole)."""

    path: Path
    rows: int
    ts_min: float
    ts_max: float
    positions: dict[str, tuple[int, int]]
    parts: tuple[tuple[int, int], ...] = ()

    @property
    def seq(self) -> int:
        return seq_of(self.path)

    @property
    def hour(self) -> str:
        return self.path.parent.name.removeprefix(f"{PARTITION}=")

    def overlaps(self, start: float | None, end: float | None) -> bool:
        """Whether some row may have `start <= ts < end` (None: unbounded)."""
        return (start is None or self.ts_max >= start) and (end is None or self.ts_min < end)

    def metadata(self) -> dict[str, str]:
        """The figures as Parquet key-value metadata."""
        figures = {_ROWS: str(self.rows), _TS_MIN: repr(self.ts_min), _TS_MAX: repr(self.ts_max),
                   _POSITIONS: json.dumps({s: list(r) for s, r in sorted(self.positions.items())})}
        return {**figures, _PARTS: json.dumps([list(part) for part in self.parts])} if self.parts else figures

    @classmethod
    def read(cls, path: Path) -> SegmentInfo:
        """The figures from a closed segment's footer; `CorruptSegment` when it cannot be read."""
        try:
            kv = pq.read_metadata(path).metadata or {}
        except (OSError, pa.ArrowException) as error:
            raise CorruptSegment(f"{path}: unreadable Parquet footer ({error})") from None
        kv = {k.decode(): v.decode() for k, v in kv.items()}
        if missing := [k for k in (_ROWS, _TS_MIN, _TS_MAX, _POSITIONS) if k not in kv]:
            raise CorruptSegment(f"{path}: no {missing[0]} in its footer (not a freshrec segment)")
        positions = {s: (int(lo), int(hi)) for s, (lo, hi) in json.loads(kv[_POSITIONS]).items()}
        parts = tuple((int(seq), int(rows)) for seq, rows in json.loads(kv.get(_PARTS, "[]")))
        return cls(path, int(kv[_ROWS]), float(kv[_TS_MIN]), float(kv[_TS_MAX]), positions, parts)


class SegmentWriter:
    """An open segment. Use `create`; `write` rows of the log schema, then `close`.

    `broken` is set by the log when a write to the file failed before it was renamed: the file's
    content is then unknown, and the rows go to a new segment by `adopt`. A `close` that failed
    after the rename (`closed` is set) only has the folder's fsync left to do when called again.
    """

    def __init__(self, path: Path, file: pa.OSFile, sink: pa.BufferedOutputStream, writer: pq.ParquetWriter,
                 opened: float) -> None:
        self.path = path
        self.file = file   # the segment's file, under `sink`
        self.sink = sink
        self.writer = writer
        self.opened = opened
        self.broken = False
        self.closed: SegmentInfo | None = None
        self.parts: tuple[tuple[int, int], ...] = ()   # set by a merge (`freshrec.log.compact`)
        self._buffer: list[pa.Table] = []
        self._buffered = [0, 0]   # rows and bytes in `_buffer`
        self._kept: list[pa.Table] = []
        self._stats: list[tuple[int, float, float, str, int, int]] = []

    @classmethod
    def create(cls, folder: Path, seq: int, schema: pa.Schema, opened: float) -> SegmentWriter:
        """Open `folder/.segment-<seq>.parquet.inprogress` (creating the folder durably);
        `opened` is the clock reading that ages it. OSError, and no file left, if that fails."""
        if not folder.is_dir():
            folder.mkdir(parents=True)
            fsync_dir(folder.parent)
        path = folder / open_name(seq)
        file = pa.OSFile(str(path), "wb")
        sink = pa.BufferedOutputStream(file, WRITE_BUFFER)
        try:
            writer = pq.ParquetWriter(sink, schema, compression=COMPRESSION, use_dictionary=False,
                                      write_statistics=[TS, POSITION], write_page_checksum=True)
        except OSError:
            sink.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, file, sink, writer, opened)

    @property
    def rows(self) -> int:
        """Rows taken so far."""
        return sum(stat[0] for stat in self._stats)

    @property
    def size(self) -> int:
        """Bytes written so far plus bytes buffered (uncompressed) for the next row group."""
        return self.sink.tell() + self._buffered[1]

    def write(self, table: pa.Table) -> None:
        """Take rows (log schema, at least one row); they are the segment's from here on, even if
        writing out a full row group then fails (OSError)."""
        ts = table.column(TS).to_numpy()
        positions = table.column(POSITION).to_numpy()
        sources = pc.unique(table.column(SOURCE)).to_pylist()   # one, but in a merge (`freshrec.log.compact`)
        for k, source in enumerate(sources):
            mine = positions if len(sources) == 1 else positions[pc.equal(table.column(SOURCE), source).to_numpy(
                zero_copy_only=False)]
            self._stats.append((table.num_rows if k == 0 else 0, float(ts.min()), float(ts.max()), source,
                                int(mine.min()), int(mine.max())))
        self._kept.append(table)
        self._buffer.append(table)
        self._buffered = [self._buffered[0] + table.num_rows, self._buffered[1] + table.nbytes]
        self.spill()

    def spill(self) -> None:
        """Write out the buffered rows once they fill a row group."""
        if self._buffered[0] >= ROW_GROUP_ROWS:
            self._write_buffer()

    def _write_buffer(self) -> None:
        if self._buffer:
            self.writer.write_table(pa.concat_tables(self._buffer), row_group_size=ROW_GROUP_ROWS)
            self._buffer, self._buffered = [], [0, 0]

    def adopt(self, broken: SegmentWriter) -> None:
        """Take every row of a `broken` segment (this one being new and empty), then drop its file."""
        self._kept, self._stats = list(broken._kept), list(broken._stats)
        self._buffer = list(broken._kept)
        self._buffered = [sum(t.num_rows for t in self._buffer), sum(t.nbytes for t in self._buffer)]
        broken.abandon()

    def abandon(self) -> None:
        """Give up this segment's file, as far as the file system lets us."""
        for step in (self.writer.close, self.sink.close, lambda: self.path.unlink(missing_ok=True)):
            try:
                step()
            except (OSError, pa.ArrowException):
                pass

    def _info(self, path: Path) -> SegmentInfo:
        rows, ts_min, ts_max, sources, lows, highs = zip(*self._stats, strict=True)
        positions: dict[str, tuple[int, int]] = {}
        for source, low, high in zip(sources, lows, highs, strict=True):
            old = positions.get(source, (low, high))
            positions[source] = (min(old[0], low), max(old[1], high))
        return SegmentInfo(path, sum(rows), min(ts_min), max(ts_max), positions, self.parts)

    def close(self) -> SegmentInfo:
        """Finish the file, make it durable and give it its closed name; returns its figures."""
        if self.closed is None:
            self._write_buffer()
            info = self._info(self.path.with_name(closed_name(seq_of(self.path))))
            self.writer.add_key_value_metadata(info.metadata())
            self.writer.close()
            self.sink.flush()
            os.fsync(self.file.fileno())
            self.sink.close()
            os.replace(self.path, info.path)
            self.closed, self._kept = info, []
        fsync_dir(self.closed.path.parent)
        return self.closed
