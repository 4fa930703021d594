"""MessageDecoder: JSON event messages decoded a batch at a time, each bad one dead-lettered with its reason,
and the same verdict as `check_event` gives one event at a time; encode_messages writes what it reads."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.events.event import Event, Field, FieldKind
from freshrec.events.live import BadEvent, check_event, events_table
from freshrec.events.messages import MessageDecoder, encode_messages

FIELDS = (Field("genre", FieldKind.CATEGORICAL, "item"), Field("price", FieldKind.DENSE, "item"),
          Field("tags", FieldKind.MULTI_CATEGORICAL, "item"), Field("class", FieldKind.CATEGORICAL, "user"))
NOW = 1_700_000_000.0


def _decode(values: list[bytes | None], decoder: MessageDecoder | None = None):
    n = len(values)
    decoder = decoder or MessageDecoder(FIELDS)
    return decoder.decode(values, np.full(n, NOW - 10.0), np.arange(100, 100 + n), "kafka:t", now=NOW)


def test_good_messages_become_one_live_schema_chunk_with_ids_as_strings() -> None:
    values = [orjson.dumps({"user": 7, "item": "i1", "ts": NOW - 5, "label": 1, "kind": "click",
                            "fields": {"genre": 3, "price": 2, "tags": ["a", 4], "class": "x"}}),
              orjson.dumps({"user": "u", "item": 8, "label": None}),
              orjson.dumps({"user": "v", "item": "i", "ts": None, "fields": None})]
    chunk, letters = _decode(values)
    assert letters == []
    assert chunk.kind == "click" and chunk.positions.tolist() == [100, 101, 102]
    reference = events_table([Event("a", NOW - 5, 7, "i1", "click", {"genre": 3, "price": 2, "tags": ["a", 4],
                                                                       "class": "x"}, 1.0),
                              Event("b", NOW - 10, "u", 8), Event("c", NOW - 10, "v", "i")],
                             {f.name: f.kind for f in FIELDS})
    assert chunk.table.equals(reference)   # missing or null ts: the message's timestamp


@pytest.mark.parametrize(("value", "reason", "says"), [
    (b"{not json", "not_json", "not JSON"),
    (b"[1, 2]", "not_json", "object"),
    (b"", "not_json", "truncated"),
    (None, "not_json", "truncated"),
    (b'{"user": "u", "item": "i", "colour": 1}', "unknown_key", "colour"),
    (b'{"user": "u", "item": "i", "fields": {"colour": 1}}', "unknown_field", "this source has: class, genre"),
    (b'{"user": "u", "item": "i", "fields": {"price": "cheap"}}', "bad_field", "$.fields.price"),
    (b'{"user": "u", "item": "i", "fields": {"price": true}}', "bad_field", "$.fields.price"),
    (b'{"user": "u", "item": "i", "fields": 3}', "bad_field", "$.fields"),
    (b'{"user": "u", "item": "i", "fields": {"tags": "a"}}', "bad_field", "$.fields.tags"),
    (b'{"item": "i"}', "missing_id", "user_id is missing"),
    (b'{"user": " ", "item": "i"}', "missing_id", "user_id is empty"),
    (b'{"user": 1.5, "item": "i"}', "bad_id", "$.user"),
    (b'{"user": "u", "item": "i", "label": 7}', "bad_label", "not 7.0"),
    (b'{"user": "u", "item": "i", "label": 0.5}', "bad_label", "not 0.5"),
    (b'{"user": "u", "item": "i", "label": true}', "bad_label", "$.label"),
    (b'{"user": "u", "item": "i", "ts": 1e300}', "bad_time", "far in the future"),
    (b'{"user": "u", "item": "i", "ts": -1}', "bad_time", "negative"),
    (b'{"user": "u", "item": "i", "ts": "yesterday"}', "bad_time", "$.ts"),
    (b'{"user": "u", "item": "i", "ts": 1e400}', "bad_time", "out of range"),
    # found by fuzzing: msgspec's RecursionError stopped the batch
    (b'{"user": "u", "event_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not_json", "nested too deeply"),
])
def test_each_bad_message_is_dead_lettered_with_its_reason_and_text(value, reason, says) -> None:
    good = orjson.dumps({"user": "u", "item": "i", "label": 0})
    chunk, letters = _decode([good, value, good])
    assert chunk.positions.tolist() == [100, 102]
    [letter] = letters
    assert (letter.source, letter.position, letter.reason) == ("kafka:t", 101, reason)
    assert says in letter.detail
    assert letter.raw == (None if value is None else value.decode())


def test_a_batch_of_bad_messages_gives_no_chunk_and_letters_in_position_order() -> None:
    chunk, letters = _decode([b'{"item": "i"}', b"nope", b'{"user": "u", "item": "i", "label": 3}'])
    assert chunk is None
    assert [(letter.position, letter.reason) for letter in letters] == [
        (100, "missing_id"), (101, "not_json"), (102, "bad_label")]


def test_ids_are_optional_where_the_source_says_so() -> None:
    chunk, letters = _decode([b'{"label": 1, "fields": {"price": 1.5}}'], MessageDecoder(FIELDS, require_ids=False))
    assert letters == [] and chunk.table.column("user_id").to_pylist() == [None]


_ids = st.one_of(st.none(), st.text(max_size=3), st.integers(-5, 5), st.floats(allow_nan=False), st.booleans())
_values = st.one_of(st.none(), st.text(max_size=2), st.integers(-3, 3), st.floats(-1e3, 1e3), st.booleans(),
                    st.lists(st.one_of(st.text(max_size=2), st.integers(0, 3)), max_size=2))
_messages = st.fixed_dictionaries({}, optional={
    "user": _ids, "item": _ids, "ts": st.one_of(st.floats(-10, 2 * NOW, allow_nan=False), st.text(max_size=2)),
    "label": st.one_of(st.none(), st.sampled_from([0, 1, 0.0, 1.0, 2, -1, 0.5]), st.booleans()),
    "fields": st.dictionaries(st.sampled_from(["genre", "price", "tags", "class", "colour"]), _values, max_size=3)})


def _one_at_a_time(body: dict) -> bool:
    """Whether `check_event` (the rule `POST /events` applies) takes the event of this message."""
    if not all(isinstance(v, (str, int, type(None))) and not isinstance(v, bool)
               for v in (body.get("user"), body.get("item"))):
        return False
    if isinstance(body.get("label"), bool):
        return False
    event = Event("e", NOW - 10 if body.get("ts") is None else body["ts"], body.get("user"), body.get("item"),
                  fields=body.get("fields") or {}, label=body.get("label"))
    try:
        check_event(event, {f.name: f.kind for f in FIELDS}, now=NOW)
    except BadEvent:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=8))
def test_the_batch_takes_exactly_the_messages_check_event_takes(bodies) -> None:
    chunk, letters = _decode([orjson.dumps(body) for body in bodies])
    taken = [] if chunk is None else chunk.positions.tolist()
    assert taken == [100 + i for i, body in enumerate(bodies) if _one_at_a_time(body)]
    assert len(taken) + len(letters) == len(bodies)


_texts = st.text(st.characters(codec="utf-8"), max_size=6)   # quotes, backslashes, control characters
_tables = st.integers(1, 6).flatmap(lambda n: st.fixed_dictionaries({
    "ts": st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=n, max_size=n),
    "user_id": st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n),
    "item_id": st.lists(st.one_of(st.none(), _texts), min_size=n, max_size=n),
    "label": st.lists(st.one_of(st.none(), st.sampled_from([0.0, 1.0])), min_size=n, max_size=n),
    "tags": st.lists(st.one_of(st.none(), st.lists(_texts, max_size=3)), min_size=n, max_size=n),
    "price": st.lists(st.one_of(st.none(), st.floats(width=32)), min_size=n, max_size=n)}))


@settings(max_examples=200, deadline=None)
@given(_tables, st.integers(0, 2), _texts)
def test_encoded_messages_are_the_rows_as_json(columns: dict, start: int, kind: str) -> None:
    table = pa.table({**columns, "price": pa.array(columns["price"], pa.float32())}).slice(start)   # offsets too
    messages = encode_messages(table, kind).to_pylist()
    assert len(messages) == table.num_rows
    for message, row in zip(messages, table.to_pylist()):
        def number(value: float | None) -> float | None:   # JSON has no NaN or infinity: null
            return value if value is not None and math.isfinite(value) else None
        assert orjson.loads(message) == {"kind": kind, "ts": number(row["ts"]), "user": row["user_id"],
                                         "item": row["item_id"], "label": row["label"],
                                         "fields": {"tags": row["tags"], "price": number(row["price"])}}


def test_encoded_messages_decode_to_the_table_they_came_from() -> None:
    table = pa.table({"ts": [NOW - 3, NOW - 2], "user_id": [7, 8], "item_id": ["i\"1", "i\n2"],
                      "label": pa.array([1.0, None], pa.float32()), "genre": pa.array(["a", "b"]).dictionary_encode(),
                      "price": [0.1, None], "tags": [["x", "y\\"], []], "class": [None, "c"]})
    chunk, letters = _decode(encode_messages(table, "click").to_pylist())
    assert letters == [] and chunk.kind == "click"
    assert chunk.table.to_pylist() == [
        {"ts": NOW - 3, "user_id": "7", "item_id": 'i"1', "label": 1.0, "genre": "a", "price": 0.1,
         "tags": ["x", "y\\"], "class": None},
        {"ts": NOW - 2, "user_id": "8", "item_id": "i\n2", "label": None, "genre": "b", "price": None, "tags": [],
         "class": "c"}]


def test_a_column_of_a_type_json_does_not_hold_is_refused() -> None:
    with pytest.raises(TypeError, match="no JSON message form"):
        encode_messages(pa.table({"ts": [1.0], "flag": [True]}))
