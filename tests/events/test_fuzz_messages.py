"""Fuzzed Kafka messages (no broker): JSON events (`MessageDecoder.decode`) and Arrow batch messages
(`decode_batch`) built from valid ones with keys dropped or added, junk values, huge numbers, NaN and
infinities, bytes cut short, flipped or not UTF-8, and random bytes. Decoding never raises; every
message (every row of a batch) comes out or is dead-lettered, once, with a documented reason.
Each test tries 100 examples (FRESHREC_FUZZ_EXAMPLES=1000 fuzzes longer).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshrec.events.batch_messages import decode_batch, encode_batch
from freshrec.events.event import Field, FieldKind
from freshrec.events.messages import MessageDecoder

FUZZ = settings(max_examples=int(os.environ.get("FRESHREC_FUZZ_EXAMPLES", 100)), deadline=None,
                suppress_health_check=list(HealthCheck))
FIELDS = (Field("genre", FieldKind.CATEGORICAL, "item"), Field("price", FieldKind.DENSE, "item"),
          Field("tags", FieldKind.MULTI_CATEGORICAL, "item"), Field("class", FieldKind.CATEGORICAL, "user"))
NOW = 1_700_000_000.0
MESSAGE_REASONS = {"not_json", "unknown_key", "unknown_field", "bad_time", "bad_label", "missing_id", "bad_id",
                   "bad_field"}
ROW_REASONS = {"bad_time", "bad_label", "missing_id"}
WHOLE_REASONS = {"not_arrow", "unknown_field", "bad_field"}

# --------------------------------------------------------------------------- JSON messages

GOOD = [{"user": "u1", "item": "i1", "ts": NOW - 5, "label": 1, "kind": "click", "event_id": "e1",
         "fields": {"genre": "g", "price": 2.5, "tags": ["a", 4], "class": "x"}},
        {"user": 7, "item": 8, "label": 0}, {"user": "v", "item": "i", "ts": None, "fields": None}]
KEYS = ["user", "item", "ts", "label", "kind", "event_id", "fields", "colour"]
FIELD_KEYS = ["genre", "price", "tags", "class", "colour"]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=5),
                 st.lists(st.one_of(st.integers(), st.text(max_size=2), st.none()), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.sampled_from([1e308, float("nan"), -1.0, 0.5, 2**63, 2**64, -2**63 - 1, "", " ", "\x00", "NaN",
                                  NOW + 1e6]))


@st.composite
def _message(draw) -> bytes | None:
    """A valid message with keys dropped, added or set to junk, then maybe its bytes damaged."""
    body = json.loads(json.dumps(draw(st.sampled_from(GOOD))))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()):
            body.pop(key, None)
        elif key == "fields" and draw(st.booleans()):
            body["fields"] = draw(st.dictionaries(st.sampled_from(FIELD_KEYS), JUNK, max_size=3))
        else:
            body[key] = draw(JUNK)
    value = json.dumps(body).encode()
    damage = draw(st.sampled_from(["none", "none", "cut", "byte", "random", "null", "nested", "not_utf8"]))
    at = draw(st.integers(0, len(value)))
    if damage == "cut":
        return value[:at]
    if damage == "byte":
        return value[:at] + draw(st.binary(min_size=1, max_size=2)) + value[at + 1:]
    if damage == "random":
        return draw(st.binary(max_size=60))
    if damage == "null":
        return None
    if damage == "nested":
        return b'{"user": "u", "item": "i", "event_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    if damage == "not_utf8":
        return value.replace(b'"i', b'"\xff\xfei', 1)
    return value


def _assert_messages_accounted(values: list[bytes | None], require_ids: bool) -> None:
    positions = np.arange(100, 100 + len(values))
    decoder = MessageDecoder(FIELDS, require_ids=require_ids)
    chunk, letters = decoder.decode(values, np.full(len(values), NOW - 10.0), positions, "kafka:t", now=NOW)
    delivered = [] if chunk is None else chunk.positions.tolist()
    if chunk is not None:
        chunk.table.validate(full=True)
    assert all(letter.reason in MESSAGE_REASONS and letter.detail for letter in letters), letters
    assert sorted(delivered + [letter.position for letter in letters]) == positions.tolist()


@FUZZ
@given(st.lists(_message(), min_size=1, max_size=8), st.booleans())
def test_near_valid_json_messages_are_each_delivered_or_dead_lettered(values, require_ids: bool) -> None:
    _assert_messages_accounted(values, require_ids)


@FUZZ
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80)), min_size=1, max_size=8))
def test_random_bytes_as_json_messages_are_each_dead_lettered_or_delivered(values) -> None:
    _assert_messages_accounted(values, True)


# --------------------------------------------------------------------------- Arrow batch messages

_FLOATS = st.one_of(st.none(), st.floats(), st.sampled_from([NOW - 1, 0.0, 1.0, 2.0, -1.0, 1e300]))
_INTS = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.integers(0, 3))
_TEXTS = st.one_of(st.none(), st.text(max_size=4), st.sampled_from(["", " ", "u", "1", "NaN", "caf\u00e9"]))
_COLUMNS = {  # the Arrow types a column may have, and its values
    "ts": [(pa.float64(), _FLOATS), (pa.int64(), _INTS), (pa.string(), _TEXTS), (pa.timestamp("s"), _INTS)],
    "user_id": [(pa.string(), _TEXTS), (pa.int64(), _INTS), (pa.float64(), _FLOATS)],
    "item_id": [(pa.string(), _TEXTS), (pa.int64(), _INTS)],
    "label": [(pa.float64(), _FLOATS), (pa.int64(), _INTS), (pa.bool_(), st.none() | st.booleans()),
              (pa.string(), _TEXTS)],
    "genre": [(pa.string(), _TEXTS), (pa.int64(), _INTS), (pa.list_(pa.string()), st.none() | st.lists(_TEXTS))],
    "price": [(pa.float64(), _FLOATS), (pa.int64(), _INTS), (pa.string(), _TEXTS)],
    "tags": [(pa.list_(pa.string()), st.none() | st.lists(_TEXTS, max_size=2)), (pa.string(), _TEXTS)],
    "colour": [(pa.string(), _TEXTS)],
}


_VALID = {  # a good batch: the type and values of each column
    "ts": (pa.float64(), st.sampled_from([NOW - 1, NOW - 100])),
    "user_id": (pa.string(), st.sampled_from(["u", "\u00e9"])), "item_id": (pa.int64(), st.integers(0, 9)),
    "label": (pa.float64(), st.sampled_from([0.0, 1.0, None])),
    "genre": (pa.string(), st.sampled_from(["g", "caf\u00e9", None])), "price": (pa.float64(), st.floats(0, 9)),
    "tags": (pa.list_(pa.string()), st.lists(st.sampled_from(["a", "\u00e9"]), max_size=2))}


@st.composite
def _batch_tables(draw) -> pa.Table:
    """A good batch with columns dropped, of other types, holding junk, unknown or twice."""
    rows = draw(st.integers(0, 6))
    names = [name for name in _VALID if draw(st.integers(0, 5))]
    names += draw(st.lists(st.sampled_from(list(_COLUMNS)), max_size=2))
    arrays = []
    for name in names:
        good = name in _VALID and draw(st.integers(0, 3))
        kind, values = _VALID[name] if good else draw(st.sampled_from(_COLUMNS[name]))
        arrays.append(pa.array(draw(st.lists(values, min_size=rows, max_size=rows)), kind))
    return pa.Table.from_arrays(arrays, names=names)


def _encode(table: pa.Table, kind: bytes) -> bytes:
    """`encode_batch` with any bytes as the kind."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.with_metadata({b"freshrec.kind": kind})) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _rows_in(value: bytes | None) -> int | None:
    """How many rows Arrow reads from `value` (None: not an Arrow IPC stream)."""
    try:
        return pa.ipc.open_stream(value or b"").read_all().num_rows
    except (pa.ArrowException, OSError):
        return None


def _assert_batch_accounted(value: bytes | None) -> None:
    chunk, letters = decode_batch(MessageDecoder(FIELDS), value, NOW - 10.0, 77, "kafka:t", now=NOW)
    assert all(letter.position == 77 and letter.detail for letter in letters), letters
    if chunk is None and len(letters) == 1 and letters[0].reason in WHOLE_REASONS:
        return   # the message dead-lettered whole
    rows = [int(re.match(r"row (\d+): ", letter.detail).group(1)) for letter in letters]
    assert all(letter.reason in ROW_REASONS for letter in letters), letters
    delivered = 0 if chunk is None else len(chunk)
    if chunk is not None:
        chunk.table.validate(full=True)
        assert chunk.positions.tolist() == [77] * delivered
    total = _rows_in(value)
    assert len(set(rows)) == len(rows) and set(rows) <= set(range(total))
    assert delivered + len(rows) == total


@FUZZ
@given(_batch_tables(), st.one_of(st.sampled_from([b"click", b""]), st.binary(max_size=6)))
def test_near_valid_batch_rows_are_each_delivered_or_dead_lettered(table: pa.Table, kind: bytes) -> None:
    _assert_batch_accounted(_encode(table, kind))


def test_encode_batch_is_the_encoding_the_fuzzing_varies() -> None:
    table = pa.table({"user_id": ["u"], "item_id": ["i"]})
    assert _encode(table, b"click") == encode_batch(table, "click")


@FUZZ
@given(_batch_tables(), st.data())
def test_damaged_batch_bytes_are_dead_lettered_whole_or_each_row_accounted(table: pa.Table, data) -> None:
    value = encode_batch(table)
    at = data.draw(st.integers(0, len(value) - 1))
    damage = data.draw(st.sampled_from(["cut", "flip", "random", "not_utf8"]))
    if damage == "cut":
        value = value[:at]
    elif damage == "not_utf8":   # text that is not UTF-8 (when a value holds an é)
        value = value.replace("\u00e9".encode(), b"\xa9\xc3")
    elif damage == "flip":
        value = value[:at] + bytes([value[at] ^ data.draw(st.integers(1, 255))]) + value[at + 1:]
    else:
        value = data.draw(st.one_of(st.none(), st.binary(max_size=300)))
    _assert_batch_accounted(value)
