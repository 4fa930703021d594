"""Reading closed segments back as `EventChunk`s in event-time order, one hour at a time.

The segments are one pyarrow dataset with Hive partitioning; each hour partition is read with
the time-range filter pushed into the scan (row groups outside it are skipped by their
statistics), its segments concatenated in segment order, and sorted by `ts` with a stable sort,
so ties keep the order they were appended in. Memory holds one hour of the range at a time.

Chunks carry the rows' `position`s as `positions`, a `source` column naming each row's source,
and as `source` that name (names joined by "," where a chunk mixes sources). `kind` and
`entered` are not logged: chunks read back have the default kind and no entry time.

>>> import tempfile
>>> from freshrec.log.segment import SegmentWriter, log_schema
>>> root = Path(tempfile.mkdtemp()); schema = log_schema([])
>>> writer = SegmentWriter.create(root / "event_hour=2023-11-14T22", 0, schema, opened=0.0)
>>> writer.write(pa.table({"ts": [1699999300.0, 1699999200.0, 1699999250.0],
...                        "user_id": ["a", "b", "c"], "item_id": ["i", "i", "i"],
...                        "label": pa.array([1, 0, 1], pa.float32()), "position": [0, 1, 2],
...                        "source": ["sim"] * 3}, schema=schema))
>>> chunks = list(read_segments(root, [writer.close()], schema, start=1699999210.0, end=None, rows=100))
>>> [(c.source, c.positions.tolist(), c.table.column("user_id").to_pylist()) for c in chunks]
[('sim', [2, 0], ['c', 'a'])]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from freshrec.events.event import TS, EventChunk
from freshrec.log.layout import PARTITION, hour_start, seq_of
from freshrec.log.segment import POSITION, SOURCE, SegmentInfo

__all__ = ["read_segments"]

_PARTITIONING = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")


def _time_filter(start: float | None, end: float | None) -> ds.Expression | None:
    bounds = []
    if start is not None:
        bounds.append(ds.field(TS) >= start)
    if end is not None:
        bounds.append(ds.field(TS) < end)
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


def _chunks(table: pa.Table, rows: int) -> Iterator[EventChunk]:
    for offset in range(0, table.num_rows, rows):
        part = table.slice(offset, rows)
        sources = sorted(pc.unique(part.column(SOURCE)).to_pylist())
        positions = part.column(POSITION).to_numpy()
        yield EventChunk(part.drop_columns([POSITION]), positions, ",".join(sources))


def read_segments(root: Path, segments: Sequence[SegmentInfo], schema: pa.Schema,
                  start: float | None, end: float | None, rows: int) -> Iterator[EventChunk]:
    """Chunks of at most `rows` rows with `start <= ts < end` (None: unbounded) from the
    `segments` (closed, under `root`) whose ts range overlaps it, in event-time order.
    Columns follow `schema`: a column an older segment lacks reads as nulls."""
    chosen = [s for s in segments if s.overlaps(start, end)]
    if not chosen:
        return
    fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        page_checksum_verification=True))
    dataset = ds.dataset([str(s.path) for s in chosen], schema=schema.append(pa.field(PARTITION, pa.string())),
                         format=fmt, partitioning=_PARTITIONING, partition_base_dir=str(root))
    where = _time_filter(start, end)
    for hour in sorted({s.hour for s in chosen}, key=hour_start):
        fragments = sorted(dataset.get_fragments(filter=ds.field(PARTITION) == hour),
                           key=lambda f: seq_of(Path(f.path)))
        table = pa.concat_tables([f.to_table(schema=dataset.schema, columns=schema.names, filter=where)
                                  for f in fragments])
        yield from _chunks(table.take(pc.sort_indices(table, [(TS, "ascending")])), rows)
