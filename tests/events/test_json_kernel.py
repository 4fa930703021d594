"""The JSON message kernel: every message it reads, it reads as msgspec does (a differential test
over hand-spelled JSON, edge cases included); what it cannot read goes to msgspec's path."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from freshrec.events.event import Field, FieldKind
from freshrec.events.json_kernel import Keys, scan
from freshrec.events.messages import MessageDecoder, encode_messages

FIELDS = (Field("genre", FieldKind.CATEGORICAL, "item"), Field("price", FieldKind.DENSE, "item"),
          Field("class", FieldKind.CATEGORICAL, "user"))
NOW = 1_700_000_000.0

_numbers = st.sampled_from([b"0", b"-0", b"1", b"-7", b"42", b"1.5", b"-0.0", b"0.1", b"1e2", b"1E-3", b"2.5e+1",
                            b"123456789012345678901234", b"9007199254740993", b"1e400", b"1e-400", b"01", b"1.",
                            b".5", b"-", b"1e", b"3.14159265358979", b"1700000000.25", b"1699999990"])
_strings = st.sampled_from([b'"a"', b'""', b'" "', b'"i\\"1"', b'"\\u0041"', b'"a\\\\b"', '"\u00e9t\u00e9"'.encode(),
                            b'"\xff"', b'"tab\tin"', b'"click"', b'"u1"', b'"x"'])
_ids = st.one_of(_strings, st.sampled_from([b"7", b"-0", b"-12", b"0", b"123456789012345678901234", b"1.0", b"null"]))
_others = st.sampled_from([b"null", b"true", b"false", b"[1, 2]", b"{}", b'{"a": 1}', b"nul", b"[]"])
_values = st.one_of(_numbers, _strings, _others)
_space = st.sampled_from([b"", b" ", b"\n", b"\t ", b"\r\n"])
_LIKELY = {"user": _ids, "item": _ids, "genre": _ids, "class": _ids, "ts": _numbers, "price": _numbers,
           "label": st.sampled_from([b"0", b"1", b"null", b"1.0", b"0.5"]), "kind": _strings, "event_id": _values}


def _value(key: str) -> st.SearchStrategy[bytes]:
    """Mostly a value of the key's type; sometimes any JSON-ish text."""
    likely = _LIKELY.get(key, _values)
    return st.one_of(likely, likely, likely, likely, likely, likely, _values)


@st.composite
def _object(draw, keys: list[str]) -> bytes:
    """A JSON object spelled by hand: keys mostly once (sometimes repeated or unknown), spacing varies."""
    members = draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=draw(st.booleans()) or None))
    space = draw(_space)
    texts = [draw(st.one_of(_object(_FIELD_KEYS), _values) if key == "fields" else _value(key)) for key in members]
    inner = b",".join(space + orjson.dumps(key) + space + b":" + space + text + space
                      for key, text in zip(members, texts))
    return b"{" + inner + space + b"}"


_FIELD_KEYS = ["genre", "price", "class", "genre", "price", "class", "colour"]
_TOP_KEYS = ["user", "item", "ts", "label", "kind", "event_id", "fields", "user", "item", "fields", "colour"]


@st.composite
def _message(draw) -> bytes:
    body, space = draw(_object(_TOP_KEYS)), draw(_space)
    return draw(st.sampled_from([body, body, body, space + body + space, body + b"x", body[:-1], b"", b"[]"]))


def _decoders() -> tuple[MessageDecoder, MessageDecoder]:
    kernel, careful = MessageDecoder(FIELDS), MessageDecoder(FIELDS)
    careful._keys = None   # msgspec's path for every message
    return kernel, careful


def _run(decoder: MessageDecoder, values: list[bytes]):
    n = len(values)
    return decoder.decode(values, np.arange(n, dtype=np.float64) + NOW - 100, np.arange(100, 100 + n), "kafka:t",
                          now=NOW)


@settings(max_examples=400, deadline=None)
@given(st.lists(_message(), min_size=1, max_size=10))
@example([b'{"user": -0, "item": "i"}', b'{"user": -12, "item": 123456789012345678901234}'])
@example([b'{"user": "\\u0041", "item": "a\\\\b"}', b'{"user": "\\"", "item": "i"}', b'{"user": "a", "user": "b"}'])
@example([b'{"fields": {"price": 1e23}}', b'{"fields": {"price": 0.1, "price": 2}}', b'{"ts": 1.0, "fields": {}}'])
@example([b'{"kind": 0, "user": "u", "item": "i"}', b'{"kind": "", "user": "u", "item": "i"}'])
@example([b'{"user":"a","event_id":1e400}', b'{"user":"a","item":"i","event_id":1e400}'])
def test_the_kernel_reads_every_message_as_msgspec_does(values: list[bytes]) -> None:
    kernel, careful = _decoders()
    (chunk, letters), (expected, expected_letters) = _run(kernel, values), _run(careful, values)
    assert [dataclasses.astuple(letter) for letter in letters] == [dataclasses.astuple(x) for x in expected_letters]
    if expected is None:
        assert chunk is None
        return
    assert chunk.table.equals(expected.table), (chunk.table.to_pylist(), expected.table.to_pylist())
    assert chunk.positions.tolist() == expected.positions.tolist()
    assert (chunk.kind, chunk.source) == (expected.kind, expected.source)


def test_what_a_producer_sends_is_read_by_the_kernel_whole() -> None:
    table = pa.table({"ts": [NOW - 5, None], "user_id": ["u1", "7"], "item_id": ["i1", None], "label": [1.0, None],
                      "genre": ["g", None], "price": [2.25, None], "class": [None, "c"]})
    values = encode_messages(table, "click").to_pylist()
    decoder = MessageDecoder(FIELDS, require_ids=False)
    out = scan(np.frombuffer(b"".join(values), np.uint8), np.cumsum([0] + [len(v) for v in values]), decoder._keys)
    assert out.fast.tolist() == [True, True]
    chunk, letters = _run(decoder, values)
    assert letters == [] and chunk.kind == "click"
    assert chunk.table.to_pylist() == [
        {"ts": NOW - 5, "user_id": "u1", "item_id": "i1", "label": 1.0, "genre": "g", "price": 2.25, "class": None},
        {"ts": NOW - 99, "user_id": "7", "item_id": None, "label": None, "genre": None, "price": None, "class": "c"}]


def test_numbers_are_read_exactly_or_left_to_msgspec() -> None:
    texts = [b"0.1", b"1e22", b"1e23", b"9007199254740992", b"9007199254740993", b"-2.5e-3", b"123456.789"]
    values = [b'{"fields": {"price": ' + text + b"}}" for text in texts]
    keys = Keys.of(["price"], [1])
    out = scan(np.frombuffer(b"".join(values), np.uint8), np.cumsum([0] + [len(v) for v in values]), keys)
    assert out.fast.tolist() == [True, True, False, True, False, True, True]
    read = out.numbers[out.fast, 2]
    assert read.tolist() == [float(t) for t, fast in zip(texts, out.fast) if fast]
