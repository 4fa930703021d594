"""Batch messages: many events in one Kafka message, an Arrow IPC stream, for producers that emit
thousands of events a second. A consumer takes one with no work per event.

A batch message carries the header `content-type: application/vnd.apache.arrow.stream` (messages
without it are JSON events, `freshrec.events.messages`). Its columns are the live schema's: `ts`
(epoch seconds; null: the message's timestamp), `user_id`, `item_id`, `label` and the source's
fields, by name; missing columns are null; the event kind is the schema's `freshrec.kind`
metadata. Every row of a message has the message's position (partition * 2**40 + offset): a
message is learned whole, and a restart resumes after the last message a checkpoint holds.

A message that is not valid Arrow IPC (`not_arrow`), has a column the source lacks (`unknown_field`),
a column twice or a column that does not cast to its field's type (`bad_field`) is dead-lettered
whole; a row that breaks a rule of `MessageDecoder.checks` is dead-lettered alone (its detail starts
`row N:`).

>>> import numpy as np
>>> from freshrec.events.event import Field, FieldKind
>>> decoder = MessageDecoder([Field("price", FieldKind.DENSE)])
>>> table = pa.table({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "label": [1.0, 7.0], "price": [3, 4]})
>>> chunk, letters = decode_batch(decoder, encode_batch(table, "click"), 5.0, 42, "kafka:demo", now=10.0)
>>> chunk.table.to_pylist(), chunk.positions.tolist(), chunk.kind
([{'ts': 5.0, 'user_id': 'u1', 'item_id': 'i1', 'label': 1.0, 'price': 3.0}], [42], 'click')
>>> [(letter.position, letter.reason, letter.detail) for letter in letters]
[(42, 'bad_label', 'row 1: label must be 0 or 1 (null: unlabelled), not 7.0')]
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.deadletter import DeadLetter
from freshrec.events.event import STANDARD_COLUMNS, TS, EventChunk
from freshrec.events.live import conform
from freshrec.events.messages import MessageDecoder

__all__ = ["CONTENT_TYPE", "MESSAGE_BYTES", "decode_batch", "encode_batch", "is_batch"]

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
MESSAGE_BYTES = 512 << 10    # rows per message chosen to stay under this (Kafka's default limit is 1 MB)
_KIND = b"freshrec.kind"


def encode_batch(table: pa.Table, kind: str = "event") -> bytes:
    """One batch message of `table`'s rows (live-schema column names)."""
    sink = pa.BufferOutputStream()
    schema = table.schema.with_metadata({_KIND: kind.encode()})
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


def is_batch(headers: list[tuple[str, bytes]] | None) -> bool:
    """Whether a message with these headers is a batch message."""
    return bool(headers) and ("content-type", CONTENT_TYPE.encode()) in headers


def decode_batch(decoder: MessageDecoder, value: bytes | None, default_ts: float, position: int, source: str,
                 now: float | None = None) -> tuple[EventChunk | None, list[DeadLetter]]:
    """The chunk of a batch message's good rows (None if none) and its dead letters."""
    def whole(reason: str, detail: str) -> tuple[None, list[DeadLetter]]:
        return None, [DeadLetter(source, position, reason, detail, None)]

    try:
        table = pa.ipc.open_stream(value or b"").read_all()
        table.validate(full=True)   # offsets in bounds, text UTF-8: damaged bytes may pass the reader
        names = table.column_names
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:   # (a column name not UTF-8)
        return whole("not_arrow", f"not an Arrow IPC stream: {error}")
    if unknown := sorted(set(names) - set(STANDARD_COLUMNS) - set(decoder.kinds)):
        has = ", ".join(sorted(decoder.kinds))
        return whole("unknown_field", f"unknown column {unknown[0]!r}; this source has: {has}")
    if twice := sorted({name for name in names if names.count(name) > 1}):
        return whole("bad_field", f"column {twice[0]!r} appears more than once")
    try:
        live = conform(table, decoder.fields)
    except (pa.ArrowException, ValueError) as error:
        return whole("bad_field", f"a column does not fit the source's types: {error}")
    if not live.num_rows:
        return None, []
    live = live.set_column(0, TS, pc.fill_null(live.column(TS), default_ts))
    checks = decoder.checks(live, time.time() if now is None else now)
    bad = np.flatnonzero(checks.bad)
    letters = [dataclasses.replace(letter, detail=f"row {row}: {letter.detail}")
               for row, letter in zip(bad, checks.letters(source, np.full(live.num_rows, position),
                                                          lambda r: orjson.dumps(table.slice(r, 1).to_pylist()[0],
                                                                                 default=str).decode()))]
    good = ~checks.bad
    if not good.any():
        return None, letters
    kind = (table.schema.metadata or {}).get(_KIND, b"event").decode("utf-8", "replace")
    kept = live.filter(pa.array(good)) if len(bad) else live   # a filter copies every column
    return EventChunk(kept, np.full(kept.num_rows, position, np.int64), source, kind, entered=time.time()), letters
