"""Live events pushed in-process: `LiveQueue`, a bounded thread-safe `Source` fed by `put` (the
server's `POST /events`), and `conform`, which gives events of any origin one Arrow schema.

Values are checked as they arrive (`check_event`): `ts` by the rule of `freshrec.events.validate`
(finite, not negative, at most `max_ahead` seconds after the wall clock), a label is 0 or 1 (None:
unlabelled), user and item ids are non-empty strings or integers (42 and "42" are the same id), a
categorical value is a string or an integer, a multi-categorical one a list of those, a dense one
a finite number; a field the source does not have is refused. Missing fields are null. A refused
event raises `BadEvent`, a ValueError that names the field and carries the dead-letter reason.

>>> from freshrec.events.event import Event, Field, FieldKind
>>> queue = LiveQueue((Field("user_id", FieldKind.CATEGORICAL), Field("price", FieldKind.DENSE)))
>>> queue.put([Event("e1", 5.0, 7, "i1", "click", {"price": 3}, label=1.0)])
1
>>> chunk = queue.poll(timeout=0.0)
>>> chunk.table.column("user_id").to_pylist(), chunk.table.column("price").to_pylist(), queue.position()
(['7'], [3.0], {'row': 1})
>>> queue.put([Event("e2", 6.0, 8, "i2", fields={"colour": "red"})])
Traceback (most recent call last):
...
freshrec.events.live.BadEvent: event 0 (e2): unknown field 'colour'; this source has: price
>>> queue.put([Event("e3", 7.0, 8, "i2", label=-1)])
Traceback (most recent call last):
...
freshrec.events.live.BadEvent: event 0 (e3): label must be 0 or 1 (null: unlabelled), not -1
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.event import (
    ITEM,
    LABEL,
    STANDARD_COLUMNS,
    TS,
    USER,
    Event,
    EventChunk,
    Field,
    FieldKind,
)
from freshrec.events.journal import LiveJournal
from freshrec.events.source import Position
from freshrec.events.validate import LIVE_MAX_AHEAD, time_problem

__all__ = ["BadEvent", "LiveQueue", "QueueFull", "arrow_type", "check_event", "check_value", "conform",
           "events_table"]

_TYPES = {FieldKind.CATEGORICAL: pa.string(), FieldKind.MULTI_CATEGORICAL: pa.list_(pa.string()),
          FieldKind.DENSE: pa.float64()}
_STANDARD = {TS: pa.float64(), USER: pa.string(), ITEM: pa.string(), LABEL: pa.float32()}


class QueueFull(RuntimeError):
    """The live queue holds its capacity of events not yet consumed."""


class BadEvent(ValueError):
    """An event refused by `check_event`: `field` names the value at fault, `reason` is its
    dead-letter code (`bad_time`, `bad_label`, `missing_id`, `bad_id`, `unknown_field`, `bad_field`)."""

    def __init__(self, message: str, reason: str, field: str) -> None:
        super().__init__(message)
        self.reason, self.field = reason, field

    def within(self, prefix: str) -> BadEvent:
        """The same problem, its message prefixed (e.g. with the event's place in a request)."""
        return BadEvent(f"{prefix}{self}", self.reason, self.field)


def arrow_type(kind: FieldKind) -> pa.DataType:
    """The Arrow type live events use for a field of this kind."""
    return _TYPES[kind]


def conform(table: pa.Table, fields: Sequence[Field]) -> pa.Table:
    """`table` with exactly the standard columns and `fields` (in that order), each cast to the
    live type of its kind (ids as strings: the hashing treats 42 and "42" alike); missing columns
    become nulls."""
    types = {**_STANDARD, **{f.name: arrow_type(f.kind) for f in fields if f.name not in _STANDARD}}
    if table.column_names == list(types) and all(t == types[n] for n, t in zip(table.column_names, table.schema.types)):
        return table   # already conformed (a Kafka source's chunks, a log's own rows)
    index: dict[str, int | str] = {}
    for i, name in enumerate(table.column_names):
        index[name] = name if name in index else i   # a repeated name: Arrow's error when it is asked for
    columns = {}
    for name, kind in types.items():
        if name not in index:
            columns[name] = pa.nulls(table.num_rows, kind)
        elif (column := table.column(index[name])).type == kind:
            columns[name] = column
        else:
            columns[name] = pc.cast(column, kind)
    return pa.table(columns)


def check_value(value: object, kind: FieldKind, name: str | None = None) -> object:
    """The value in its live form, or ValueError (naming the field `name` when given).

    >>> check_value(42, FieldKind.CATEGORICAL), check_value(["a", 1], FieldKind.MULTI_CATEGORICAL)
    ('42', ['a', '1'])
    """
    if name is None:
        return _check(value, kind)
    try:
        return _check(value, kind)
    except ValueError as error:
        raise ValueError(f"{name} {error}") from None


def check_ids(values: Sequence[object], name: str) -> list[str | None]:
    """`check_value` of a column of categorical ids (strings or integers) at once: the live forms,
    or the ValueError of the first bad one.

    >>> check_ids([3, "b", None], "item_id")
    ['3', 'b', None]
    >>> check_ids([3, 2.5], "item_id")
    Traceback (most recent call last):
    ...
    ValueError: item_id must be a string or an integer id, not 2.5
    """
    kinds = set(map(type, values))
    if kinds <= {str, int}:
        return list(map(str, values))
    return [check_value(value, FieldKind.CATEGORICAL, name) for value in values]


def _check(value: object, kind: FieldKind) -> object:
    if value is None:
        return None
    if kind is FieldKind.DENSE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value!r}")
        return float(value)
    if kind is FieldKind.MULTI_CATEGORICAL:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a list of ids, not {value!r}")
        return [_check(v, FieldKind.CATEGORICAL) for v in value]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"must be a string or an integer id, not {value!r}")
    return str(value)


def check_event(event: Event, kinds: dict[str, FieldKind], require_ids: bool = True,
                now: float | None = None, max_ahead: float = LIVE_MAX_AHEAD) -> None:
    """`BadEvent` naming the first problem of `event` for a source with fields `kinds` (a user and
    an item id are required unless `require_ids` is False, e.g. for a Criteo-like stream); `ts` may
    lie at most `max_ahead` seconds after `now` (default: the wall clock).

    >>> check_event(Event("e", 1e300, "u", "i"), {}, now=1_700_000_000.0)
    Traceback (most recent call last):
    ...
    freshrec.events.live.BadEvent: ts=1e+300 is more than 300 s after the clock of this host (1700000000): ...
    """
    if unknown := sorted(set(event.fields) - set(kinds)):
        raise BadEvent(f"unknown field {unknown[0]!r}; this source has: {', '.join(sorted(kinds))}",
                       "unknown_field", unknown[0])
    if problem := time_problem(event.ts, time.time() if now is None else now, max_ahead):
        raise BadEvent(f"{TS}={event.ts!r} {problem}", "bad_time", TS)
    _check_label(event.label)
    for name, value in ((USER, event.user_id), (ITEM, event.item_id)):
        _check_id(name, value, require_ids)
    for name, value in event.fields.items():
        try:
            check_value(value, kinds[name], f"field {name!r}")
        except ValueError as error:
            raise BadEvent(str(error), "bad_field", name) from None


def _check_label(label: object) -> None:
    if label is None:
        return
    if isinstance(label, bool) or not isinstance(label, (int, float)) or label not in (0, 1):
        raise BadEvent(f"{LABEL} must be 0 or 1 (null: unlabelled), not {label!r}", "bad_label", LABEL)


def _check_id(name: str, value: object, required: bool) -> None:
    if value is None:
        if required:
            raise BadEvent(f"{name} is missing", "missing_id", name)
        return
    if isinstance(value, str) and not value.strip():
        raise BadEvent(f"{name} is empty", "missing_id", name)
    try:
        check_value(value, FieldKind.CATEGORICAL, name)
    except ValueError as error:
        raise BadEvent(str(error), "bad_id", name) from None


def events_table(events: Sequence[Event], kinds: dict[str, FieldKind]) -> pa.Table:
    """The live-schema table of events that passed `check_event`."""
    columns = {TS: pa.array([float(e.ts) for e in events], pa.float64()),
               USER: pa.array([None if e.user_id is None else str(e.user_id) for e in events], pa.string()),
               ITEM: pa.array([None if e.item_id is None else str(e.item_id) for e in events], pa.string()),
               LABEL: pa.array([e.label for e in events], pa.float32())}
    for name, kind in kinds.items():
        columns[name] = pa.array([_check(e.fields.get(name), kind) for e in events], arrow_type(kind))
    return pa.table(columns)


class LiveQueue:
    """A bounded in-process source of live events; `put` from any thread, read by one consumer.

    Positions count the rows handed out; `entered` of each chunk is the time it was put.

    In memory (the default), a chunk is gone once handed out: `seek` refuses to move. With
    `journal` (a folder, `freshrec.events.journal.LiveJournal`), `put` returns only once the events
    are durable there, and positions are journal rows: on opening, the queue hands out the rows
    after the journal's committed row; `seek` hands out the rows from any row still there again;
    `commit` lets the journal delete what lies before the committed row. So a process killed after
    a `put` learns its events again when it restarts and seeks to its last checkpoint.
    """

    has_event_time = True

    def __init__(self, fields: Sequence[Field], name: str = "live", capacity: int = 100_000,
                 max_ahead: float = LIVE_MAX_AHEAD, journal: str | Path | None = None) -> None:
        """`max_ahead`: seconds an event's `ts` may lie after the wall clock (see `check_event`);
        `journal`: the folder of the durable journal (opened here; None: in memory only)."""
        self.name = name
        self.fields = tuple(f for f in fields if f.name not in STANDARD_COLUMNS)
        self.capacity = capacity
        self.max_ahead = max_ahead
        self._kinds = {f.name: f.kind for f in self.fields}
        self._chunks: deque[EventChunk] = deque()
        self._pending = self._handed_out = self._committed = 0
        self._ready = threading.Condition()
        self._putting = threading.Lock()   # puts one at a time: the capacity check holds
        self._closed = False
        self.journal = None if journal is None else LiveJournal.open(journal, self.empty().table.schema)
        if self.journal is not None:
            self._handed_out = self._committed = self.journal.committed

    @property
    def durable(self) -> bool:
        """Whether `put` makes its events durable (a journal) and `seek` can go back."""
        return self.journal is not None

    def put(self, events: Sequence[Event]) -> int:
        """Queue the events as one chunk (all or none); returns how many. `BadEvent` names the
        first bad event and field; QueueFull when the queue is at capacity; with a journal, the
        events are durable when it returns (`JournalError`: they could not be made so)."""
        if not events:
            return 0
        now = time.time()
        for i, event in enumerate(events):
            try:
                check_event(event, self._kinds, now=now, max_ahead=self.max_ahead)
            except BadEvent as error:
                raise error.within(f"event {i} ({event.event_id}): ") from None
        table = events_table(events, self._kinds)
        with self._putting:
            with self._ready:
                if self._closed:
                    raise QueueFull("the live queue is closed")
                if len(self) + len(events) > self.capacity:
                    raise QueueFull(f"{len(self)} events are waiting (capacity {self.capacity}); retry later")
            entered = time.time()
            if self.journal is not None:
                self.journal.append(table, events[0].kind, entered)
            with self._ready:
                if self.journal is None:
                    start = self._handed_out + self._pending
                    positions = np.arange(start, start + len(events), dtype=np.int64)
                    self._chunks.append(EventChunk(table, positions, self.name, events[0].kind, entered=entered))
                    self._pending += len(events)
                self._ready.notify()
        return len(events)

    def poll(self, timeout: float | None = None) -> EventChunk | None:
        """The oldest waiting chunk, waiting up to `timeout` seconds (None: until one comes or
        the queue closes); None if there is none."""
        with self._ready:
            if not self._ready.wait_for(lambda: len(self) or self._closed, timeout):
                return None
            if not len(self):
                return None
            if self.journal is not None:
                return self._from_journal()
            chunk = self._chunks.popleft()
            self._pending -= len(chunk)
            self._handed_out += len(chunk)
            return chunk

    def _from_journal(self) -> EventChunk:
        """The journal's batch at the next row (the caller holds `_ready`)."""
        start = self._handed_out
        batch = self.journal.batch_at(start)
        n = batch.table.num_rows
        self._handed_out += n
        return EventChunk(batch.table, np.arange(start, start + n, dtype=np.int64), self.name, batch.kind,
                          batch.entered)

    def close(self) -> None:
        """No more puts; iteration ends once the waiting chunks are handed out."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self.journal is not None:
            with self._putting:
                self.journal.close()

    def empty(self) -> EventChunk:
        """A chunk of no events, in the live schema."""
        return EventChunk(events_table([], self._kinds), np.empty(0, np.int64), self.name)

    @property
    def closed(self) -> bool:
        """`close()` was called (chunks may still be waiting)."""
        return self._closed

    def __iter__(self) -> Iterator[EventChunk]:
        while (chunk := self.poll()) is not None:
            yield chunk

    def __len__(self) -> int:
        """Rows waiting to be handed out."""
        if self.journal is not None:
            return self.journal.rows - self._handed_out
        return self._pending

    def position(self) -> Position:
        return {"row": self._handed_out}

    def commit(self, position: Position) -> None:
        self._committed = position["row"]
        if self.journal is not None:
            self.journal.commit(self._committed)

    def committed(self) -> Position:
        return {"row": self._committed}

    def seek(self, position: Position) -> None:
        """Hand out the rows from `position` on (next); only with a journal, within its rows."""
        row = position["row"]
        if self.journal is None:
            if row != self._handed_out:
                raise ValueError("a live queue without a journal cannot seek: its events are gone once handed out")
            return
        if not self.journal.first <= row <= self.journal.rows:
            raise ValueError(f"live position {row:,} is outside the journal's rows "
                             f"{self.journal.first:,}..{self.journal.rows:,} in {self.journal.folder}")
        with self._ready:
            self._handed_out = row
            self._ready.notify_all()
