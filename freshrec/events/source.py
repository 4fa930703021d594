"""The `Source` protocol, the in-memory `TableReplay`, and replay pacing and limits.

A source hands out `EventChunk`s in event-time order, reports the position after the last
chunk it handed out (`position()`), remembers a committed position (`commit()`), and can
resume from one (`seek()`). Positions are dicts of partition -> offset so that files
(one partition) and Kafka (many) share the type. A source may also have `keep_alive()`, which the
loop calls while it has no room for a chunk (a Kafka consumer stays in its group meanwhile).

>>> import numpy as np, pyarrow as pa
>>> table = pa.table({"ts": [3.0, 1.0, 2.0], "user_id": [1, 2, 3], "item_id": [7, 8, 9],
...                   "label": pa.array([1, 0, 1], pa.float32())})
>>> replay = TableReplay(table, np.array([1, 2, 3]), name="demo", batch_size=2)
>>> [chunk.table.column("ts").to_pylist() for chunk in replay]
[[1.0, 2.0], [3.0]]
>>> replay.position()
{'row': 3}
>>> replay.seek({"row": 2}); [len(c) for c in replay]
[1]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from freshrec.events.event import TS, EventChunk, Field

Position = dict[str, int]


@runtime_checkable
class Source(Protocol):
    """Where events come from: a file replay, the simulator, a queue."""

    name: str
    fields: tuple[Field, ...]
    has_event_time: bool

    def __iter__(self) -> Iterator[EventChunk]: ...

    def position(self) -> Position: ...

    def commit(self, position: Position) -> None: ...

    def committed(self) -> Position: ...

    def seek(self, position: Position) -> None: ...


class TableReplay:
    """Replays a validated in-memory table in event-time order (stable: ties keep file order).

    `positions` are the rows' source positions (line numbers); the replay position is the
    number of rows handed out so far.
    """

    def __init__(self, table: pa.Table, positions: np.ndarray, name: str,
                 fields: tuple[Field, ...] = (), batch_size: int = 65_536,
                 kind: str = "impression", has_event_time: bool = True) -> None:
        self.name, self.fields, self.batch_size = name, fields, batch_size
        self.kind, self.has_event_time = kind, has_event_time
        self._table, self._positions = table, positions
        self._next = 0
        self._committed = 0

    def _sorted(self) -> tuple[pa.Table, np.ndarray]:
        ts = self._table.column(TS).to_numpy()
        if len(ts) and np.all(ts[1:] >= ts[:-1]):
            return self._table, self._positions
        order = np.argsort(ts, kind="stable")
        return self._table.take(pa.array(order)), self._positions[order]

    def __iter__(self) -> Iterator[EventChunk]:
        self._table, self._positions = self._sorted()
        while self._next < self._table.num_rows:
            start, stop = self._next, min(self._next + self.batch_size, self._table.num_rows)
            self._next = stop
            yield EventChunk(self._table.slice(start, stop - start),
                             self._positions[start:stop], self.name, self.kind)

    def __len__(self) -> int:
        return self._table.num_rows

    def position(self) -> Position:
        return {"row": self._next}

    def commit(self, position: Position) -> None:
        self._committed = position["row"]

    def committed(self) -> Position:
        return {"row": self._committed}

    def seek(self, position: Position) -> None:
        row = position["row"]
        if not 0 <= row <= self._table.num_rows:
            raise ValueError(f"position {row} is outside 0..{self._table.num_rows}")
        self._next = row


def limited(chunks: Iterable[EventChunk], limit: int | None) -> Iterator[EventChunk]:
    """Stop after `limit` rows (the last chunk is cut); `None` means no limit."""
    remaining = limit
    for chunk in chunks:
        if remaining is None:
            yield chunk
            continue
        if remaining <= 0:
            return
        yield chunk.slice(0, remaining)
        remaining -= len(chunk)


def paced(chunks: Iterable[EventChunk], speed: float, tick: float = 0.05,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[EventChunk]:
    """Replay at `speed` x event time (60 = one hour of events per minute).

    Chunks are cut so that each piece is released when the wall clock reaches its event
    time; `tick` (seconds of wall time) is the finest release step.

    >>> import numpy as np, pyarrow as pa
    >>> t = pa.table({"ts": [0.0, 30.0, 60.0]})
    >>> chunk = EventChunk(t, np.arange(3), "demo")
    >>> now = [0.0]
    >>> pieces = paced([chunk], speed=60, clock=lambda: now[0],
    ...                sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> [len(p) for p in pieces], now[0]
    ([1, 1, 1], 1.0)
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    start_wall: float | None = None
    start_ts = 0.0
    for chunk in chunks:
        ts = chunk.table.column(TS).to_numpy()
        if start_wall is None and len(ts):
            start_wall, start_ts = clock(), float(ts[0])
        if start_wall is None:
            continue
        due = (ts - start_ts) / speed
        begin = 0
        while begin < len(due):
            stop = int(np.searchsorted(due, due[begin] + tick, side="left"))
            wait = start_wall + float(due[begin]) - clock()
            if wait > 0:
                sleep(wait)
            yield chunk.slice(begin, stop)
            begin = stop



class LimitedSource:
    """A `Source` that ends after `limit` rows; the count travels in its position (`"limited"`),
    so a restored run stops at the same row.

    >>> import numpy as np, pyarrow as pa
    >>> replay = TableReplay(pa.table({"ts": [1.0, 2.0, 3.0]}), np.arange(3), name="demo", batch_size=2)
    >>> source = LimitedSource(replay, 3 - 1)
    >>> [len(c) for c in source], source.position()
    ([2], {'row': 2, 'limited': 2})
    """

    def __init__(self, source: Source, limit: int) -> None:
        self.source, self.limit, self.count = source, limit, 0
        self.name, self.fields, self.has_event_time = source.name, source.fields, source.has_event_time

    def __iter__(self) -> Iterator[EventChunk]:
        chunks = iter(self.source)
        while self.count < self.limit and (chunk := next(chunks, None)) is not None:
            chunk = chunk.slice(0, self.limit - self.count)
            self.count += len(chunk)
            yield chunk

    def position(self) -> Position:
        return {**self.source.position(), "limited": self.count}

    def commit(self, position: Position) -> None:
        self.source.commit({k: v for k, v in position.items() if k != "limited"})

    def committed(self) -> Position:
        return self.source.committed()

    def seek(self, position: Position) -> None:
        self.count = position.get("limited", 0)
        self.source.seek({k: v for k, v in position.items() if k != "limited"})
