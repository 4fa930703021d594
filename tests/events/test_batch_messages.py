"""Batch messages (Arrow IPC): good rows as one chunk, bad rows and bad messages dead-lettered with their reasons."""

from __future__ import annotations

import pyarrow as pa
import pytest

from freshrec.events.batch_messages import CONTENT_TYPE, decode_batch, encode_batch, is_batch
from freshrec.events.event import Field, FieldKind
from freshrec.events.messages import MessageDecoder

FIELDS = (Field("genre", FieldKind.CATEGORICAL, "item"), Field("price", FieldKind.DENSE, "item"),
          Field("tags", FieldKind.MULTI_CATEGORICAL, "item"))
NOW = 1_700_000_000.0


def _decode(value: bytes | None):
    return decode_batch(MessageDecoder(FIELDS), value, NOW - 10.0, 77, "kafka:t", now=NOW)


def test_a_batch_becomes_one_chunk_in_the_live_schema_with_the_message_position() -> None:
    table = pa.table({"ts": [NOW - 1, None], "user_id": [1, 2], "item_id": ["a", "b"], "label": [1, 0],
                      "tags": [["x", "y"], None]})
    chunk, letters = _decode(encode_batch(table, "click"))
    assert letters == [] and chunk.kind == "click" and chunk.positions.tolist() == [77, 77]
    assert chunk.table.to_pylist() == [
        {"ts": NOW - 1, "user_id": "1", "item_id": "a", "label": 1.0, "genre": None, "price": None, "tags": ["x", "y"]},
        {"ts": NOW - 10, "user_id": "2", "item_id": "b", "label": 0.0, "genre": None, "price": None, "tags": None}]


def test_bad_rows_are_dead_lettered_alone_with_their_row_and_text() -> None:
    table = pa.table({"ts": [NOW, 1e300, NOW], "user_id": ["u", "v", None], "item_id": ["a", "b", "c"],
                      "label": [0.0, 1.0, 1.0]})
    chunk, letters = _decode(encode_batch(table))
    assert chunk.table.column("user_id").to_pylist() == ["u"]
    assert [(letter.position, letter.reason) for letter in letters] == [(77, "bad_time"), (77, "missing_id")]
    assert letters[0].detail.startswith("row 1: ts=1e+300") and letters[1].detail == "row 2: user_id is missing"
    assert '"user_id":"v"' in letters[0].raw


def _not_utf8(value: bytes) -> bytes:
    """`value` with each UTF-8 'é' turned into two bytes that are not UTF-8."""
    return value.replace("\u00e9".encode(), b"\xa9\xc3")


@pytest.mark.parametrize(("value", "reason", "says"), [
    (b"{}", "not_arrow", "not an Arrow IPC stream"),
    (None, "not_arrow", "not an Arrow IPC stream"),
    (encode_batch(pa.table({"user_id": ["u"], "item_id": ["i"], "colour": ["red"]})), "unknown_field", "'colour'"),
    (encode_batch(pa.table({"user_id": ["u"], "item_id": ["i"], "price": ["cheap"]})), "bad_field", "cheap"),
    # found by fuzzing: a KeyError; text and a column name that are not UTF-8 (a value delivered, a UnicodeDecodeError)
    (encode_batch(pa.Table.from_arrays([pa.array(["u"]), pa.array(["v"])], names=["user_id", "user_id"])),
     "bad_field", "'user_id' appears more than once"),
    (_not_utf8(encode_batch(pa.table({"user_id": ["u\u00e9"], "item_id": ["i"]}))), "not_arrow", "Invalid UTF8"),
    (_not_utf8(encode_batch(pa.table({"user_id": ["u"], "item_id": ["i"], "g\u00e9": ["x"]}))), "not_arrow", "utf-8"),
])
def test_a_message_that_does_not_fit_is_dead_lettered_whole(value, reason, says) -> None:
    chunk, [letter] = _decode(value)
    assert chunk is None and (letter.position, letter.reason) == (77, reason) and says in letter.detail


def test_a_kind_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    value = encode_batch(pa.table({"user_id": ["u"], "item_id": ["i"]}), "click\u00e9")
    chunk, letters = _decode(_not_utf8(value))   # found by fuzzing: a UnicodeDecodeError
    assert letters == [] and chunk.kind == "click\ufffd\ufffd"


def test_an_empty_batch_is_nothing_and_the_header_says_what_a_message_is() -> None:
    assert _decode(encode_batch(pa.table({"user_id": pa.array([], pa.string())}))) == (None, [])
    assert is_batch([("content-type", CONTENT_TYPE.encode())]) and not is_batch(None) and not is_batch([])
