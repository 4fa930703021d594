"""JSON event messages (Kafka values, one event each), both ways a batch at a time with no Python
object per field: `encode_messages` writes a table's rows as messages, column by column with Arrow
compute; `MessageDecoder` reads messages into the live schema with no Python check per value.

A message is the shape `POST /events` takes:
`{"user": .., "item": .., "ts": epoch s, "kind": "click", "label": 1, "fields": {..}, "event_id": ..}`.
A numba kernel (`freshrec.events.json_kernel`) reads the messages of the common form straight into
columns: a known key once each, plain ASCII strings, numbers exact in one float operation, no
multi-categorical field in the source. msgspec reads the others (`MessageDecoder`'s careful path):
it decodes each into a struct typed from the source's fields (JSON syntax, unknown keys and value
types are checked there, in C), and the structs' values are gathered column by column; a
differential test holds the kernel to it. Then the rules of `freshrec.events.live.check_event`
are applied to whole columns (`RowChecks`). A missing or null `ts` is the message's own timestamp.
Each bad message becomes one `DeadLetter` with its position, its first reason and its text:

| reason | what |
|---|---|
| `not_json` | not JSON, not an object, empty, or nested too deeply |
| `unknown_key` / `unknown_field` | a key the message shape lacks / a field the source lacks |
| `bad_time` | `ts` not a number, negative, or more than `max_ahead` s after the wall clock |
| `bad_label` | a label other than 0, 1 or null |
| `missing_id` / `bad_id` | a required user or item id null or blank / not a string or an integer |
| `bad_field` | a field's value of the wrong type (`fields` itself not an object) |

>>> from freshrec.events.event import Field, FieldKind
>>> decoder = MessageDecoder([Field("price", FieldKind.DENSE)])
>>> values = [b'{"user": 7, "item": "i1", "label": 1, "fields": {"price": 3}}', b'{"user": "u", "item": "i2"',
...           b'{"user": "u", "item": "i3", "label": 7}']
>>> chunk, letters = decoder.decode(values, np.array([5.0, 6.0, 7.0]), np.array([10, 11, 12]), "kafka:demo")
>>> chunk.table.to_pylist(), chunk.positions.tolist()
([{'ts': 5.0, 'user_id': '7', 'item_id': 'i1', 'label': 1.0, 'price': 3.0}], [10])
>>> [(letter.position, letter.reason) for letter in letters]
[(11, 'not_json'), (12, 'bad_label')]
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.deadletter import DeadLetter
from freshrec.events.event import ITEM, LABEL, STANDARD_COLUMNS, TS, USER, EventChunk, Field, FieldKind
from freshrec.events.json_kernel import NUMBER, STRING, TOP, Keys, scan, strings
from freshrec.events.live import arrow_type
from freshrec.events.validate import LIVE_MAX_AHEAD, RowChecks, blank_mask

__all__ = ["MessageDecoder", "encode_messages"]

_VALUE_TYPES = {FieldKind.CATEGORICAL: str | int | None, FieldKind.DENSE: float | None,
                FieldKind.MULTI_CATEGORICAL: list[str | int] | None}
_REASON_AT = {"$.ts": "bad_time", "$.label": "bad_label", "$.user": "bad_id", "$.item": "bad_id"}
_AT = re.compile(r" - at `([^`]*)`$")
_KEYS = {TS: "ts", USER: "user", ITEM: "item", LABEL: "label"}   # column -> message key


def encode_messages(table: pa.Table, kind: str = "event") -> pa.Array:
    """One JSON message per row of `table` (live-schema column names: `ts`, `user_id`, `item_id`,
    `label`, the other columns under `fields`), the shape `MessageDecoder` reads, as Arrow binary.
    Built column-wise with Arrow compute: each column's values as JSON text, then one join per row.
    Nulls and non-finite numbers become null; a number is the shortest text of its exact (float64) value.

    >>> table = pa.table({"ts": [1.5, None], "user_id": [7, 8], "item_id": ['say "hi"', "i2"],
    ...                   "label": [1.0, float("nan")], "tags": [["a", "b"], None]})
    >>> for message in encode_messages(table, "click").to_pylist():
    ...     print(message.decode())
    {"kind":"click","ts":1.5,"user":7,"item":"say \\"hi\\"","label":1,"fields":{"tags":["a","b"]}}
    {"kind":"click","ts":null,"user":8,"item":"i2","label":null,"fields":{"tags":null}}
    """
    parts: list = ['{"kind":' + orjson.dumps(kind).decode()]
    for column, key in _KEYS.items():
        if column in table.column_names:
            parts += [f',"{key}":', _json_values(table.column(column))]
    fields = [name for name in table.column_names if name not in _KEYS]
    for i, name in enumerate(fields):
        opening = ',"fields":{' if i == 0 else ","
        parts += [opening + orjson.dumps(name).decode() + ":", _json_values(table.column(name))]
    parts.append("}}" if fields else "}")
    return pc.cast(pc.binary_join_element_wise(*parts, ""), pa.binary())


def _json_values(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value of a column as JSON text (null for a null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _json_values(values.dictionary_decode())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _json_strings(values.cast(pa.string()))
    elif pa.types.is_integer(kind):
        text = pc.cast(values, pa.string())
    elif pa.types.is_floating(kind):   # via float64: a float32's own value, not its shortest float32 spelling
        text = pc.cast(pc.cast(values, pa.float64()), pa.string())
        text = pc.if_else(pc.is_finite(values), text, pa.scalar(None, pa.string()))
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        items = type(values).from_arrays(values.offsets, _json_values(values.values))
        joined = pc.binary_join_element_wise("[", pc.binary_join(items, ","), "]", "")
        text = pc.if_else(values.is_null(), pa.scalar(None, pa.string()), joined)
    elif pa.types.is_null(kind):
        text = pa.nulls(len(values), pa.string())
    else:
        raise TypeError(f"a column of type {kind} has no JSON message form (strings, numbers, lists of them)")
    return pc.fill_null(text, "null")


def _json_strings(values: pa.Array) -> pa.Array:
    """Strings as JSON strings, escaped where a look at their bytes says it is needed: quotes and
    backslashes by Arrow, the rare string with a control character (a JSON escape) by orjson."""
    offsets = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
    data = values.buffers()[2]
    utf8 = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data is not None else np.empty(0, np.uint8)
    escaped = values
    if ((utf8 == ord('"')) | (utf8 == ord("\\"))).any():
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    text = pc.binary_join_element_wise('"', escaped, '"', "")
    if not (utf8 < 0x20).any():
        return text
    control = pc.fill_null(pc.match_substring_regex(values, "[\\x00-\\x1f]"), False)
    spelled = [orjson.dumps(value).decode() for value in values.filter(control).to_pylist()]
    return pc.replace_with_mask(text, control, pa.array(spelled, text.type))


class MessageDecoder:
    """Decodes batches of JSON event messages for a source with `fields` (a user and an item id are
    required unless `require_ids` is False, e.g. for a Criteo-like stream); `ts` may lie at most
    `max_ahead` seconds after the wall clock."""

    def __init__(self, fields: Sequence[Field], require_ids: bool = True, max_ahead: float = LIVE_MAX_AHEAD) -> None:
        self.fields = tuple(f for f in fields if f.name not in STANDARD_COLUMNS)
        self.kinds = {f.name: f.kind for f in self.fields}
        self.require_ids, self.max_ahead = require_ids, max_ahead
        names = {f"f{i}": name for i, name in enumerate(self.kinds)}   # any field name, even "class"
        slots = [(slot, _VALUE_TYPES[self.kinds[name]], None) for slot, name in names.items()]
        values = msgspec.defstruct("Fields", slots, rename=names, forbid_unknown_fields=True)
        message = msgspec.defstruct("Message", [("event_id", Any, None), ("ts", float | None, None),
                                                ("user", str | int | None, None), ("item", str | int | None, None),
                                                ("kind", Any, None), ("label", float | None, None),
                                                ("fields", values | None, None)], forbid_unknown_fields=True)
        self._decoder = msgspec.json.Decoder(message)
        self._no_fields = (None,) * len(self.kinds)
        multi = FieldKind.MULTI_CATEGORICAL in self.kinds.values()
        self._keys = None if multi else Keys.of(list(self.kinds), [NUMBER if kind is FieldKind.DENSE else STRING
                                                                     for kind in self.kinds.values()])

    def decode(self, values: Sequence[bytes | None], default_ts: np.ndarray, positions: np.ndarray, source: str,
               now: float | None = None) -> tuple[EventChunk | None, list[DeadLetter]]:
        """The chunk of the good messages (None if none is good) and a dead letter per bad one;
        `default_ts` and `positions` hold each message's own timestamp (epoch s) and position.
        The kernel (`freshrec.events.json_kernel`) reads the messages of the common form; msgspec the others."""
        default_ts, positions = np.asarray(default_ts, np.float64), np.asarray(positions)
        fast, read, kind_of = self._scan(values, default_ts)
        slow = np.flatnonzero(~fast)
        decoded, kept, letters = self._decoded([values[i] for i in slow], positions[slow], source)
        parts = [read] if read is not None else []
        if decoded:
            rows = slow[kept]
            parts.append((rows, self._table(decoded, default_ts[rows])))
            kind_of.update(zip(rows.tolist(), (m.kind for m in decoded)))
        if not parts:
            return None, letters
        rows = np.concatenate([part[0] for part in parts])
        table = pa.concat_tables([part[1] for part in parts])
        if len(parts) > 1:   # back in message order
            order = np.argsort(rows, kind="stable")
            rows, table = rows[order], table.take(pa.array(order))
        checks = self.checks(table, time.time() if now is None else now)
        letters += checks.letters(source, positions[rows], lambda r: _text(values[rows[r]]))
        letters.sort(key=lambda letter: letter.position)
        good = ~checks.bad
        if not good.any():
            return None, letters
        kind = kind_of[int(rows[int(np.argmax(good))])]
        kept = table.filter(pa.array(good)) if checks.bad.any() else table   # a filter copies every column
        return EventChunk(kept, positions[rows][good], source, str(kind or "event"), entered=time.time()), letters

    def _scan(self, values: Sequence[bytes | None],
              default_ts: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, pa.Table] | None, _Kinds]:
        """The messages the kernel read (a mask), their rows and live-schema table (None if none),
        and their kinds by message number."""
        if self._keys is None:
            return np.zeros(len(values), np.bool_), None, _Kinds()
        data = np.frombuffer(b"".join(value or b"" for value in values), np.uint8)
        bounds = np.zeros(len(values) + 1, np.int64)
        np.cumsum([len(value or b"") for value in values], out=bounds[1:])
        scanned = scan(data, bounds, self._keys)
        rows = np.flatnonzero(scanned.fast)
        if not len(rows):
            return scanned.fast, None, _Kinds()
        numbers, starts = scanned.numbers[rows], scanned.starts[rows]
        gathered = strings(data, starts, scanned.ends[rows])

        def text(column: int) -> pa.Array:
            offsets, chars = gathered[column]
            valid = starts[:, column] >= 0
            nulls = len(valid) - int(valid.sum())
            bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
            return pa.Array.from_buffers(pa.string(), len(valid), [bitmap, pa.py_buffer(offsets), pa.py_buffer(chars)],
                                         nulls)
        ts = numbers[:, 0]
        columns = {TS: pa.array(np.where(np.isnan(ts), default_ts[rows], ts)), USER: text(0), ITEM: text(1),
                   LABEL: pa.array(numbers[:, 1], pa.float32(), from_pandas=True)}
        for k, (name, kind) in enumerate(self.kinds.items()):
            at = int(self._keys.column[len(TOP) + k])
            columns[name] = text(at) if kind is not FieldKind.DENSE else pa.array(numbers[:, at], mask=np.isnan(
                numbers[:, at]))
        return scanned.fast, (rows, pa.table(columns)), _Kinds(data, scanned.starts[:, 2], scanned.ends[:, 2])

    def _decoded(self, values: Sequence[bytes | None], positions: np.ndarray,
                 source: str) -> tuple[list, np.ndarray, list[DeadLetter]]:
        """The decoded messages, their places in `values`, and a dead letter per message msgspec refused."""
        decode = self._decoder.decode
        try:
            return [decode(value) for value in values], np.arange(len(values)), []
        except (msgspec.DecodeError, TypeError, RecursionError):   # a bad one among them (None: TypeError)
            pass
        decoded, kept, letters = [], [], []
        for i, value in enumerate(values):
            try:
                decoded.append(decode(value or b""))
                kept.append(i)
            except msgspec.DecodeError as error:   # a ValidationError too
                letters.append(DeadLetter(source, int(positions[i]), *self._reason(error), _text(value)))
            except RecursionError:
                letters.append(DeadLetter(source, int(positions[i]), "not_json", "not JSON: nested too deeply",
                                          _text(value)))
        return decoded, np.asarray(kept, np.int64), letters

    def _table(self, decoded: list, default_ts: np.ndarray) -> pa.Table:
        """The live-schema table of messages msgspec decoded."""
        ts = np.array([m.ts for m in decoded], np.float64)    # None: NaN
        label = np.array([m.label for m in decoded], np.float64)
        columns = {TS: pa.array(np.where(np.isnan(ts), default_ts, ts)), USER: _strings([m.user for m in decoded]),
                   ITEM: _strings([m.item for m in decoded]), LABEL: pa.array(label, pa.float32(), from_pandas=True)}
        rows = [self._no_fields if m.fields is None else msgspec.structs.astuple(m.fields) for m in decoded]
        for (name, kind), column in zip(self.kinds.items(), zip(*rows, strict=True) if self.kinds else ()):
            columns[name] = _strings(column, kind) if kind is not FieldKind.DENSE else pa.array(column, pa.float64())
        return pa.table(columns)

    def checks(self, table: pa.Table, now: float) -> RowChecks:
        """The rows of a live-schema table (`ts` filled in) that break the rules of `check_event`
        other than types: `ts` out of range, a label not 0, 1 or null, a required id missing or blank."""
        checks = RowChecks(table.num_rows)
        checks.out_of_range(table.column(TS), TS, now, self.max_ahead)
        label = table.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float64)   # null: NaN
        checks.reject(~np.isnan(label) & (label != 0.0) & (label != 1.0), "bad_label",
                      lambda r: f"{LABEL} must be 0 or 1 (null: unlabelled), not {float(label[r])!r}")
        for name in (USER, ITEM):
            ids = table.column(name).combine_chunks()
            missing = ids.is_null().to_numpy(zero_copy_only=False)
            if self.require_ids:
                checks.reject(missing, "missing_id", lambda r, name=name: f"{name} is missing")
            checks.reject(blank_mask(ids) & ~missing, "missing_id", lambda r, name=name: f"{name} is empty")
        return checks

    def _reason(self, error: msgspec.DecodeError) -> tuple[str, str]:
        """The dead-letter reason and detail of a message msgspec refused."""
        text = str(error)
        match = _AT.search(text)
        at = match.group(1) if match else "$"
        if not isinstance(error, msgspec.ValidationError) or (at == "$" and text.startswith("Expected")):
            return "not_json", text if isinstance(error, msgspec.ValidationError) else f"not JSON: {text}"
        if text.startswith("Object contains unknown field"):
            if at == "$.fields":
                return "unknown_field", f"{text}; this source has: {', '.join(sorted(self.kinds))}"
            return "unknown_key", f"{text}; a message has: event_id, ts, user, item, kind, label, fields"
        return _REASON_AT.get(at, "bad_field" if at.startswith("$.fields") else "not_json"), text


class _Kinds(dict):
    """Each message's `kind` by its number: those msgspec decoded as set, the kernel's read from
    their byte spans when asked."""

    def __init__(self, data: np.ndarray | None = None, starts: np.ndarray | None = None,
                 ends: np.ndarray | None = None) -> None:
        super().__init__()
        self.data, self.starts, self.ends = data, starts, ends

    def __missing__(self, message: int) -> str | None:
        start, end = int(self.starts[message]), int(self.ends[message])
        return bytes(self.data[start:end]).decode() if start >= 0 else None


def _strings(values: Sequence[Any], kind: FieldKind = FieldKind.CATEGORICAL) -> pa.Array:
    """Ids or categorical values (strings or integers; 42 and "42" are the same id) as Arrow strings,
    lists of them for a multi-categorical field; the integers are converted only where there are some."""
    target = arrow_type(kind)
    try:
        return pa.array(values, target)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        if kind is FieldKind.MULTI_CATEGORICAL:
            return pa.array([None if v is None else [str(x) for x in v] for v in values], target)
        return pa.array([v if v is None or type(v) is str else str(v) for v in values], target)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
