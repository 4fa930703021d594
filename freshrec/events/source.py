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


class SourceOver:
    """A `Source` made from another, `source`: its name, fields, positions, commits and `close` are
    the other's; a subclass changes what its chunks are (`__iter__`)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.name, self.fields, self.has_event_time = source.name, source.fields, source.has_event_time

    def __iter__(self) -> Iterator[EventChunk]:
        return iter(self.source)

    def position(self) -> Position:
        return self.source.position()

    def commit(self, position: Position) -> None:
        self.source.commit(position)

    def committed(self) -> Position:
        return self.source.committed()

    def seek(self, position: Position) -> None:
        self.source.seek(position)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


class PacedSource(SourceOver):
    """A `Source` read at `speed` x event time (1: as it happened, 60: an hour a minute): each chunk
    comes once the wall clock, from the first chunk read, reaches its last event's time. Chunks are
    not cut (positions stay the source's, so a restored run goes on exactly), so the pace is as fine
    as a chunk's span of event time (`source.chunk_rows`).

    >>> import numpy as np, pyarrow as pa
    >>> replay = TableReplay(pa.table({"ts": [0.0, 30.0, 60.0, 90.0]}), np.arange(4), name="demo", batch_size=2)
    >>> now = [0.0]
    >>> source = PacedSource(replay, speed=60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> [(len(chunk), now[0]) for chunk in source], source.position()
    ([(2, 0.5), (2, 1.5)], {'row': 4})
    """

    def __init__(self, source: Source, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not source.has_event_time:
            raise ValueError(f"{source.name} has no event time to pace by")
        super().__init__(source)
        self.speed, self.clock, self.sleep = speed, clock, sleep
        self._start: tuple[float, float] | None = None   # (wall clock, event time) of the first event read

    def __iter__(self) -> Iterator[EventChunk]:
        for chunk in self.source:
            ts = chunk.table.column(TS).to_numpy()
            if len(ts):
                if self._start is None:
                    self._start = (self.clock(), float(ts[0]))
                wait = self._start[0] + (float(ts[-1]) - self._start[1]) / self.speed - self.clock()
                if wait > 0:
                    self.sleep(wait)
            yield chunk

    def seek(self, position: Position) -> None:
        self._start = None   # the pace starts over from the next chunk read
        self.source.seek(position)


class LimitedSource(SourceOver):
    """A `Source` that ends after `limit` rows; the count travels in its position (`"limited"`),
    so a restored run stops at the same row.

    >>> import numpy as np, pyarrow as pa
    >>> replay = TableReplay(pa.table({"ts": [1.0, 2.0, 3.0]}), np.arange(3), name="demo", batch_size=2)
    >>> source = LimitedSource(replay, 3 - 1)
    >>> [len(c) for c in source], source.position()
    ([2], {'row': 2, 'limited': 2})
    """

    def __init__(self, source: Source, limit: int) -> None:
        super().__init__(source)
        self.limit, self.count = limit, 0

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

    def seek(self, position: Position) -> None:
        self.count = position.get("limited", 0)
        self.source.seek({k: v for k, v in position.items() if k != "limited"})
