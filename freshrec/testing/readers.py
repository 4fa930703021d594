"""Checks every reader in `freshrec.events.datasets.FORMATS` (and any `Source`) must pass.

A check takes `open_reader(dead_letters) -> Source`, which opens a fresh reader over the same
data each time, and raises `AssertionError` saying what broke:

- bad rows go to the dead letters, one each, with a reason, a detail and a position, and the
  stream goes on: every good row comes out, and no row both comes out and is dead-lettered;
- positions are int64, `position()` never goes back and moves with every chunk; event time
  never goes back (for sources with event time);
- seeking to the position after the first chunk gives the rest of the stream, and seeking to
  the start gives it all again;
- raw ids are int64 or strings, never floats; labels float32 0/1; time float64; and the
  featurised batches carry int64 ids.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> check_reader(lambda dead: Simulator(SimulatorConfig(batch_size=16, total_events=40)), rows=40, bad=0)
['dead_letters', 'positions', 'seek', 'ids']
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from freshrec.events.deadletter import DeadLetterSink, MemoryDeadLetters
from freshrec.events.event import ITEM, LABEL, TS, USER, EventChunk, FieldKind
from freshrec.events.source import Source
from freshrec.features import FeaturePipeline, default_specs

__all__ = ["check_dead_letters", "check_ids", "check_positions", "check_reader", "check_seek"]

Opener = Callable[[DeadLetterSink], Source]


def _read(open_reader: Opener) -> tuple[Source, list[EventChunk], MemoryDeadLetters]:
    dead = MemoryDeadLetters()
    reader = open_reader(dead)
    return reader, list(reader), dead


def _rows(chunks: list[EventChunk]) -> tuple[pa.Table | None, np.ndarray]:
    """The chunks' rows as one table (None without chunks) and their positions."""
    if not chunks:
        return None, np.zeros(0, np.int64)
    return pa.concat_tables([c.table for c in chunks]), np.concatenate([c.positions for c in chunks])


def check_dead_letters(open_reader: Opener, rows: int, bad: int) -> None:
    """`rows` good rows come out, `bad` rows are dead-lettered, each once, with its reason."""
    reader, chunks, dead = _read(open_reader)
    delivered = sum(len(c) for c in chunks)
    assert delivered == rows, f"{reader.name}: {delivered} rows came out, not {rows}: a bad row stopped the stream?"
    assert dead.total == len(dead.letters) == bad, \
        f"{reader.name}: {len(dead.letters)} dead letters ({dict(dead.counts)}), not {bad}"
    for letter in dead.letters:
        assert re.fullmatch(r"[a-z_]+", letter.reason) and letter.detail, f"{reader.name}: {letter} has no reason"
        assert isinstance(letter.position, int), f"{reader.name}: {letter} has no integer position"
    lettered = [letter.position for letter in dead.letters]
    assert len(set(lettered)) == len(lettered), f"{reader.name}: a row was dead-lettered twice: {sorted(lettered)}"
    both = set(lettered) & set(_rows(chunks)[1].tolist())
    assert not both, f"{reader.name}: rows at {sorted(both)} came out and were dead-lettered"


def check_positions(open_reader: Opener) -> None:
    """Row positions are int64; `position()` never goes back, moves with each chunk; time is ordered."""
    reader = open_reader(MemoryDeadLetters())
    previous, last_ts = reader.position(), -np.inf
    for chunk in reader:
        now = reader.position()
        assert chunk.positions.dtype == np.int64, f"{reader.name}: positions are {chunk.positions.dtype}"
        assert now.keys() == previous.keys() and all(now[k] >= previous[k] for k in now), \
            f"{reader.name}: position went from {previous} to {now}"
        assert not len(chunk) or now != previous, f"{reader.name}: a chunk of {len(chunk)} rows left {now} as it was"
        if reader.has_event_time and len(chunk):
            ts = chunk.table.column(TS).to_numpy()
            assert ts[0] >= last_ts and bool(np.all(np.diff(ts) >= 0)), f"{reader.name}: event time went back"
            last_ts = ts[-1]
        previous = now


def check_seek(open_reader: Opener) -> None:
    """A fresh reader sought to the position after the first chunk gives the rest of the stream;
    sought back to its start, it gives the whole stream again."""
    reader = open_reader(MemoryDeadLetters())
    start = reader.position()
    chunks, cut = [], start
    for chunk in reader:
        chunks.append(chunk)
        if len(chunks) == 1:
            cut = reader.position()
    assert len(chunks) >= 2, f"{reader.name}: the check needs a stream of two chunks or more, not {len(chunks)}"
    resumed = open_reader(MemoryDeadLetters())
    resumed.seek(cut)
    _same_rows(reader.name, "after seeking past the first chunk", _rows(chunks[1:]), _rows(list(resumed)))
    resumed.seek(start)
    _same_rows(reader.name, "after seeking back to the start", _rows(chunks), _rows(list(resumed)))


def _same_rows(name: str, when: str, expected: tuple, got: tuple) -> None:
    (table, positions), (got_table, got_positions) = expected, got
    assert np.array_equal(positions, got_positions), \
        f"{name}: {when}, positions {got_positions.tolist()[:5]}... instead of {positions.tolist()[:5]}..."
    assert got_table is not None and got_table.equals(table), f"{name}: {when}, other rows came out"


def check_ids(open_reader: Opener) -> None:
    """Raw ids are int64 or strings (never floats), labels float32 0/1, time float64; the batches
    built from the chunks carry int64 ids."""
    reader, chunks, _ = _read(open_reader)
    pipeline = FeaturePipeline(default_specs(reader.fields))
    fields = [f.name for f in reader.fields if f.kind is not FieldKind.DENSE]
    for chunk in chunks:
        table = chunk.table
        sparse = {*fields, *(c for c in (USER, ITEM) if c in table.column_names)}
        assert table.schema.field(TS).type == pa.float64(), f"{reader.name}: time is {table.schema.field(TS).type}"
        for column in sparse:
            kind = table.schema.field(column).type
            values = kind.value_type if pa.types.is_list(kind) else kind
            assert values == pa.int64() or pa.types.is_string(values) or pa.types.is_large_string(values), \
                f"{reader.name}: ids in {column!r} are {kind}, not int64 or strings"
        if LABEL in table.column_names:
            labels = table.column(LABEL)
            assert labels.type == pa.float32(), f"{reader.name}: labels are {labels.type}, not float32"
            assert pc.all(pc.is_in(labels.drop_null(), pa.array([0.0, 1.0], pa.float32()))).as_py(), \
                f"{reader.name}: labels other than 0 and 1"
        batch = pipeline.build(chunk)
        assert batch.sparse.values().dtype == torch.int64, f"{reader.name}: batch ids are {batch.sparse.values().dtype}"


def check_reader(open_reader: Opener, rows: int, bad: int) -> list[str]:
    """Every check on the reader `open_reader` opens, whose data holds `rows` good and `bad` bad
    rows in at least two chunks; returns the checks' names."""
    check_dead_letters(open_reader, rows, bad)
    check_positions(open_reader)
    check_seek(open_reader)
    check_ids(open_reader)
    return ["dead_letters", "positions", "seek", "ids"]
