"""`Example`: an impression with its label and the time the label became known, and the column
layout of the chunks of examples the joiner emits.

A chunk of examples is an `EventChunk` of kind "example" whose rows are the impressions' rows
(their `ts`, ids and fields, without the `kind` column) with `label` (float32: 1.0 or 0.0) set by
the join, plus `label_ts` (float64: the ts of the action that made it positive, never before the
impression's ts, or the end of the window that closed it), `action_kind` (the kind of that
action; null for negatives) and `impression_source`; `positions` are the impressions' positions in
that source, so (`impression_source`, position) names an impression exactly once.

>>> import pyarrow as pa
>>> rows = pa.table({"ts": [1.0], "user_id": ["u"], "item_id": ["i"], "genre": ["jazz"]})
>>> chunk = example_chunk(rows, [7], ["log"], [1.0], [4.5], ["click"], "join")
>>> [(x.event.event_id, x.event.fields, x.label, x.label_ts, x.action) for x in examples(chunk)]
[('log:7', {'genre': 'jazz'}, 1.0, 4.5, 'click')]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from freshrec.events.event import ITEM, LABEL, STANDARD_COLUMNS, TS, USER, Event, EventChunk

__all__ = ["ACTION_KIND", "EXAMPLE_KIND", "IMPRESSION_SOURCE", "LABEL_TS", "Example", "example_chunk",
           "examples"]

LABEL_TS, ACTION_KIND, IMPRESSION_SOURCE = "label_ts", "action_kind", "impression_source"
EXAMPLE_KIND = "example"


@dataclass(frozen=True)
class Example:
    """One labelled impression (the row-wise view, for edges and tests): the impression `event`
    (id "source:position", its label set), `label`, `label_ts` and the `action` kind that made
    it positive (None for a negative)."""

    event: Event
    label: float
    label_ts: float
    action: str | None = None


def _put(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def _array(values: Sequence | np.ndarray | pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(kind)
    return pa.array(values, kind)


def example_chunk(rows: pa.Table, positions: Sequence[int], sources: Sequence[str], labels: Sequence[float],
                  label_ts: Sequence[float], actions: Sequence[str | None], name: str) -> EventChunk:
    """Impression `rows` with their join outcome, as a chunk of examples from source `name` (the
    outcome columns as sequences, numpy or Arrow arrays)."""
    table = _put(rows, LABEL, _array(labels, pa.float32()))
    table = _put(table, LABEL_TS, _array(label_ts, pa.float64()))
    table = _put(table, ACTION_KIND, _array(actions, pa.string()))
    table = _put(table, IMPRESSION_SOURCE, _array(sources, pa.string()))
    return EventChunk(table, np.asarray(positions, np.int64), name, EXAMPLE_KIND)


def examples(chunk: EventChunk) -> Iterator[Example]:
    """The rows of a chunk of examples as `Example`s."""
    own = (LABEL_TS, ACTION_KIND, IMPRESSION_SOURCE)
    for position, row in zip(chunk.positions.tolist(), chunk.table.to_pylist(), strict=True):
        fields = {k: v for k, v in row.items() if k not in STANDARD_COLUMNS and k not in own}
        event = Event(f"{row[IMPRESSION_SOURCE]}:{position}", row[TS], row.get(USER), row.get(ITEM),
                      "impression", fields, row[LABEL])
        yield Example(event, row[LABEL], row[LABEL_TS], row[ACTION_KIND])
