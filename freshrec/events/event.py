"""The event types: one `Event`, and an `EventChunk` of many events held column-wise.

Sources hand out `EventChunk`s: an Arrow table whose standard columns are
`ts` (float64 epoch seconds), `user_id`, `item_id` (raw ids: int64 or string),
`label` (float32, 0/1) and the source's own fields, plus the source position of
every row (line number for files, offset for queues). `Event` is the one-record
view used at the edges (HTTP ingest, Kafka messages, tests).

>>> chunk = EventChunk.from_events([
...     Event("e1", 10.0, "u1", "i1", "click", {"genre": "drama"}, label=1.0),
...     Event("e2", 11.0, "u2", "i1", "click", {"genre": "comedy"}, label=0.0),
... ], source="api")
>>> len(chunk), chunk.table.column_names
(2, ['ts', 'user_id', 'item_id', 'label', 'genre'])
>>> [e.user_id for e in chunk.events()]
['u1', 'u2']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa

TS, USER, ITEM, LABEL = "ts", "user_id", "item_id", "label"
STANDARD_COLUMNS = (TS, USER, ITEM, LABEL)
OWNERS = ("user", "item", "context")


class FieldKind(str, Enum):
    """What a source column holds; `features` turns each kind into ids or floats."""

    CATEGORICAL = "categorical"
    MULTI_CATEGORICAL = "multi_categorical"
    DENSE = "dense"


@dataclass(frozen=True)
class Field:
    """A feature column a source provides, with its kind and what it describes (`owner`: "user",
    "item" or "context"; servers keep the latest user and item fields to rank candidates).

    >>> Field("genres", FieldKind.MULTI_CATEGORICAL, owner="item").kind.value
    'multi_categorical'
    """

    name: str
    kind: FieldKind
    owner: str = "context"

    def __post_init__(self) -> None:
        if self.owner not in OWNERS:
            raise ValueError(f"{self.name}: owner {self.owner!r} is not one of {OWNERS}")


@dataclass(frozen=True)
class Event:
    """One interaction: who, what, when, of which kind, with extra fields and an optional label."""

    event_id: str
    ts: float
    user_id: str | int | None
    item_id: str | int | None
    kind: str = "impression"
    fields: dict[str, Any] = field(default_factory=dict)
    label: float | None = None


@dataclass(frozen=True)
class EventChunk:
    """Many events column-wise: `table` (standard + field columns) and `positions` (int64 per row).

    `source` names where the rows came from; `kind` is the event kind of every row; `entered` is
    the wall-clock time (epoch seconds) the rows entered the system, where the source knows it
    (freshness is measured from there); `read` is how many source events the chunk stands for when
    it holds a part of them (one rank's share of a wider chunk; None: its rows), and `parts` the
    sizes of the micro-batches its rows are to be learned in (zeros where a micro-batch of the wider
    chunk has none of them; None: the loop cuts them).
    """

    table: pa.Table
    positions: np.ndarray
    source: str
    kind: str = "impression"
    entered: float | None = None
    read: int | None = None
    parts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.positions) != self.table.num_rows:
            raise ValueError(f"{len(self.positions)} positions for {self.table.num_rows} rows")

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def events_read(self) -> int:
        """The source events this chunk stands for (`read`, or its rows)."""
        return self.table.num_rows if self.read is None else self.read

    def slice(self, start: int, stop: int) -> EventChunk:
        """Rows `start:stop` as a new chunk (zero copy)."""
        stop = min(stop, len(self))
        return EventChunk(self.table.slice(start, max(stop - start, 0)),
                          self.positions[start:stop], self.source, self.kind, self.entered)

    def column(self, name: str) -> pa.Array:
        """One column as a single contiguous Arrow array."""
        column = self.table.column(name)
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()

    def events(self) -> Iterator[Event]:
        """Row-wise view; for edges and tests, not for the hot path."""
        rows = self.table.to_pylist()
        for position, row in zip(self.positions.tolist(), rows):
            extra = {k: v for k, v in row.items() if k not in STANDARD_COLUMNS}
            yield Event(f"{self.source}:{position}", row[TS], row.get(USER), row.get(ITEM),
                        self.kind, extra, row.get(LABEL))

    @classmethod
    def from_events(cls, events: Sequence[Event], source: str) -> EventChunk:
        """Build a chunk from `Event`s; positions are their order in `events`."""
        names = list(dict.fromkeys(k for e in events for k in e.fields))
        columns = {
            TS: pa.array([e.ts for e in events], pa.float64()),
            USER: pa.array([e.user_id for e in events]),
            ITEM: pa.array([e.item_id for e in events]),
            LABEL: pa.array([e.label for e in events], pa.float32()),
        }
        for name in names:
            columns[name] = pa.array([e.fields.get(name) for e in events])
        kind = events[0].kind if events else "impression"
        return cls(pa.table(columns), np.arange(len(events), dtype=np.int64), source, kind)
