"""A numba kernel that reads the common form of JSON event messages a batch at a time, with no
Python object per message or field: the messages' bytes in one buffer, each message's numbers
into a float array and its strings as byte spans of the buffer (Arrow string columns are then
gathered from the spans, `strings`).

The kernel takes a message only where its reading is certainly the one `msgspec` gives
(`freshrec.events.messages.MessageDecoder`'s careful path), and marks any other for that path:
- an object of known keys, each once (a repeated key, an unknown one: careful path);
- strings of printable ASCII without escapes (a backslash, a control or non-ASCII byte: careful path);
- numbers by JSON's grammar whose value is exact in one float operation: at most 2**53 in the
  mantissa and a power of ten up to 1e22 (Clinger's fast path: the one rounding is correct);
- integer ids and categorical values (their text is their digits, as `str(int)` spells them; -0 aside);
- `kind` a string or null; `event_id` a string, number (exact, as above), true, false or null (its
  value is unused);
- `fields` an object of the source's fields or null (a multi-categorical field is not read here).

>>> import numpy as np
>>> keys = Keys.of(["price", "shop"], [NUMBER, STRING])
>>> messages = [b'{"user": 7, "ts": 1.5, "fields": {"price": 3, "shop": "s1"}}', b'{"user": "\\\\u0041"}']
>>> data = np.frombuffer(b"".join(messages), np.uint8)
>>> bounds = np.cumsum([0] + [len(m) for m in messages])
>>> out = scan(data, bounds, keys)
>>> out.fast.tolist(), out.numbers[0].tolist()           # ts, label, price; the escape is not read here
([True, False], [1.5, nan, 3.0])
>>> [bytes(data[s:e]) for s, e in zip(out.starts[0], out.ends[0]) if s >= 0]   # user, shop
[b'7', b's1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from freshrec._words import load8, store8

__all__ = ["NUMBER", "STRING", "Keys", "Scanned", "scan", "strings"]

STRING, NUMBER = 0, 1   # what a field holds: an id-like string (or integer), a number
TOP = ("event_id", "ts", "user", "item", "kind", "label", "fields")
_EVENT_ID, _TS, _USER, _ITEM, _KIND, _LABEL, _FIELDS = range(len(TOP))
# numbers: ts, label, then the NUMBER fields; strings: user, item, kind, then the STRING fields
_NUMBER_AT = {_TS: 0, _LABEL: 1}
_STRING_AT = {_USER: 0, _ITEM: 1, _KIND: 2}
_QUOTE, _BACKSLASH, _COMMA, _COLON, _OPEN, _CLOSE, _MINUS, _PLUS, _DOT, _ZERO = (
    34, 92, 44, 58, 123, 125, 45, 43, 46, 48)
_POW10 = np.array([10.0 ** k for k in range(23)])   # exact in float64
_MAX_MANTISSA = 2 ** 53


class Keys(NamedTuple):
    """The keys a message may have, as the kernel matches them: top-level keys first, then fields."""

    names: np.ndarray      # uint8: every key's bytes
    bounds: np.ndarray     # int64[keys + 1]: key k is names[bounds[k]:bounds[k + 1]]
    column: np.ndarray     # int64[keys]: its column among the numbers or the strings (-1: none)
    holds: np.ndarray      # int64[keys]: STRING or NUMBER (top-level keys: by TOP's rules)

    @classmethod
    def of(cls, fields: Sequence[str], kinds: Sequence[int]) -> Keys:
        """The keys of messages whose `fields` object holds `fields` of `kinds` (STRING or NUMBER)."""
        encoded = [name.encode() for name in (*TOP, *fields)]
        column, holds, numbers, texts = [], [], len(_NUMBER_AT), len(_STRING_AT)
        for k in range(len(TOP)):
            column.append(_NUMBER_AT.get(k, _STRING_AT.get(k, -1)))
            holds.append(NUMBER if k in _NUMBER_AT else STRING)
        for kind in kinds:
            column.append(numbers if kind == NUMBER else texts)
            holds.append(kind)
            numbers, texts = numbers + (kind == NUMBER), texts + (kind == STRING)
        return cls(np.frombuffer(b"".join(encoded), np.uint8).copy(),
                   np.cumsum([0] + [len(name) for name in encoded]).astype(np.int64),
                   np.array(column, np.int64), np.array(holds, np.int64))

    @property
    def counts(self) -> tuple[int, int]:
        """How many number and string columns a message fills."""
        fields = self.holds[len(TOP):]
        return len(_NUMBER_AT) + int((fields == NUMBER).sum()), len(_STRING_AT) + int((fields == STRING).sum())


class Scanned(NamedTuple):
    """Per message: `fast` (read here; else the careful path reads it), its numbers (NaN: null or
    absent; JSON has no NaN) and its strings' byte spans `[starts, ends)` in the buffer (-1: null)."""

    fast: np.ndarray
    numbers: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def scan(data: np.ndarray, bounds: np.ndarray, keys: Keys) -> Scanned:
    """Read the messages `data[bounds[m]:bounds[m + 1]]` (uint8 buffer, int64 bounds)."""
    n = len(bounds) - 1
    n_numbers, n_strings = keys.counts
    fast = np.zeros(n, np.bool_)
    numbers = np.full((n, n_numbers), np.nan)
    starts = np.full((n, n_strings), -1, np.int64)
    ends = np.full((n, n_strings), -1, np.int64)
    _scan(data, bounds, keys.names, keys.bounds, keys.column, keys.holds, fast, numbers, starts, ends)
    return Scanned(fast, numbers, starts, ends)


def strings(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each column's spans (`starts[:, c]`, `ends[:, c]`) as Arrow's int32 offsets and data (a null
    span is empty; its validity is the caller's), gathered in one pass over the messages."""
    offsets, bases = _offsets(starts, ends)
    if (offsets[:, -1] >= 2 ** 31).any():
        raise ValueError("a string column of over 2 GiB in one batch")
    out = np.empty(int(bases[-1]), np.uint8)
    _gather(data, starts, offsets, bases, out)
    return [(offsets[c].astype(np.int32), out[bases[c]:bases[c + 1]]) for c in range(starts.shape[1])]


@numba.njit(nogil=True, cache=True)
def _offsets(starts, ends):
    n, columns = starts.shape
    offsets = np.zeros((columns, n + 1), np.int64)
    for c in range(columns):
        for r in range(n):
            size = ends[r, c] - starts[r, c] if starts[r, c] >= 0 else 0
            offsets[c, r + 1] = offsets[c, r] + size
    bases = np.zeros(columns + 1, np.int64)
    for c in range(columns):
        bases[c + 1] = bases[c] + offsets[c, n]
    return offsets, bases


@numba.njit(nogil=True, cache=True)
def _gather(data, starts, offsets, bases, out):
    n, columns = starts.shape
    for r in range(n):                   # message by message: its bytes stay in cache
        for c in range(columns):
            source, at = starts[r, c], bases[c] + offsets[c, r]
            size, k = offsets[c, r + 1] - offsets[c, r], 0
            while k + 8 <= size:         # a word at a time (ids are often 8 characters or more)
                store8(out, at + k, load8(data, source + k))
                k += 8
            while k < size:
                out[at + k] = data[source + k]
                k += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _space(c):
    return c == 32 or c == 10 or c == 13 or c == 9


@numba.njit(nogil=True, cache=True, inline="always")
def _skip(data, p, end):
    while p < end and _space(data[p]):
        p += 1
    return p


@numba.njit(nogil=True, cache=True, inline="always")
def _digit(c):
    return 48 <= c <= 57


@numba.njit(nogil=True, cache=True, inline="always")
def _string(data, p, end):
    """The end of the plain string opening at p (its closing quote), or -1."""
    p += 1
    while p < end:
        c = data[p]
        if c == _QUOTE:
            return p
        if c == _BACKSLASH or c < 32 or c >= 128:
            return -1
        p += 1
    return -1


@numba.njit(nogil=True, cache=True, inline="always")
def _number(data, p, end):
    """(end, value, integer, exact) of the JSON number at p; end -1: not a number."""
    start, negative = p, False
    if p < end and data[p] == _MINUS:
        negative, p = True, p + 1
    if p >= end or not _digit(data[p]):
        return -1, 0.0, False, False
    mantissa, digits, exponent = 0, 0, 0
    if data[p] == _ZERO:
        p += 1
        if p < end and _digit(data[p]):     # a leading zero: not JSON
            return -1, 0.0, False, False
    else:
        while p < end and _digit(data[p]):
            if digits < 19:
                mantissa = mantissa * 10 + (data[p] - _ZERO)
                digits += 1
            else:
                exponent += 1
                digits = 99            # more digits than a float holds: not exact
            p += 1
    integer = True
    if p < end and data[p] == _DOT:
        integer, p = False, p + 1
        if p >= end or not _digit(data[p]):
            return -1, 0.0, False, False
        while p < end and _digit(data[p]):
            if mantissa == 0 and data[p] == _ZERO:
                exponent -= 1
            elif digits < 19:
                mantissa = mantissa * 10 + (data[p] - _ZERO)
                digits += 1
                exponent -= 1
            else:
                digits = 99
            p += 1
    if p < end and (data[p] == 101 or data[p] == 69):   # e, E
        integer, p = False, p + 1
        sign = 1
        if p < end and (data[p] == _PLUS or data[p] == _MINUS):
            sign, p = (-1 if data[p] == _MINUS else 1), p + 1
        if p >= end or not _digit(data[p]):
            return -1, 0.0, False, False
        power = 0
        while p < end and _digit(data[p]):
            power = min(power * 10 + (data[p] - _ZERO), 100_000)
            p += 1
        exponent += sign * power
    if integer and negative and mantissa == 0 and p - start == 2:
        return p, -0.0, True, False        # -0: an integer that str() spells "0"
    if mantissa == 0:
        return p, -0.0 if negative else 0.0, integer, digits != 99
    if digits == 99 or mantissa > _MAX_MANTISSA or exponent > 22 or exponent < -22:
        return p, 0.0, integer, False
    value = mantissa * _POW10[exponent] if exponent >= 0 else mantissa / _POW10[-exponent]
    return p, -value if negative else value, integer, True


@numba.njit(nogil=True, cache=True, inline="always")
def _literal(data, p, end, word):
    """The end of the literal `word` (bytes as an array) at p, or -1."""
    if p + len(word) > end:
        return -1
    for k in range(len(word)):
        if data[p + k] != word[k]:
            return -1
    return p + len(word)


@numba.njit(nogil=True, cache=True, inline="always")
def _key(data, start, stop, names, bounds, first, last, hint):
    """The key among keys first..last-1 whose bytes are data[start:stop] (hint tried first), or -1."""
    size = stop - start
    for attempt in range(last - first + 1):
        k = hint if attempt == 0 else first + attempt - 1
        if k < first or k >= last or (attempt > 0 and k == hint):
            continue
        if bounds[k + 1] - bounds[k] != size:
            continue
        same = True
        for i in range(size):
            if names[bounds[k] + i] != data[start + i]:
                same = False
                break
        if same:
            return k
    return -1


# owned, writeable arrays: numba's cache reloads a read-only global array's data pointer, not its bytes
_NULL, _TRUE, _FALSE = (np.array(list(word), np.uint8) for word in (b"null", b"true", b"false"))


@numba.njit(nogil=True, cache=True, inline="always")
def _value(data, p, end, holds, column, top_code, numbers, starts, ends, m):
    """Read one value of a key at p into the message's columns; its end, or -1 (careful path)."""
    c = data[p]
    if c == 110:                                       # null: the column stays null
        return _literal(data, p, end, _NULL)
    if top_code == _EVENT_ID:                          # any scalar; its value is not used
        if c == _QUOTE:
            q = _string(data, p, end)
            return -1 if q < 0 else q + 1
        if c == 116:
            return _literal(data, p, end, _TRUE)
        if c == 102:
            return _literal(data, p, end, _FALSE)
        q, _, _, exact = _number(data, p, end)
        return q if exact else -1                      # 1e400: msgspec refuses it (out of range)
    if holds == NUMBER:
        q, value, _, exact = _number(data, p, end)
        if q < 0 or not exact:
            return -1
        numbers[m, column] = value
        return q
    if c == _QUOTE:
        q = _string(data, p, end)
        if q < 0:
            return -1
        starts[m, column], ends[m, column] = p + 1, q
        return q + 1
    if top_code == _KIND:                              # a kind that is not a string: careful path
        return -1
    q, _, integer, exact = _number(data, p, end)
    if q < 0 or not integer or (not exact and data[p] == _MINUS and q - p == 2):   # a float, or -0
        return -1
    starts[m, column], ends[m, column] = p, q
    return q


@numba.njit(nogil=True, cache=True)
def _message(data, p, end, names, bounds, column, holds, seen, numbers, starts, ends, m):
    """Read the message object opening at p (the `fields` object inside it too: a loop, not a
    recursion, which numba's cache cannot reload); its end, or -1 (careful path)."""
    first, last, inside = 0, len(TOP), False          # the keys of the object being read
    p = _skip(data, p + 1, end)
    expect_key = p >= end or data[p] != _CLOSE
    hint = 0
    while True:
        if expect_key:
            if p >= end or data[p] != _QUOTE:
                return -1
            q = _string(data, p, end)
            if q < 0:
                return -1
            k = _key(data, p + 1, q, names, bounds, first, last, hint)
            if k < 0 or seen[k] == m:                  # unknown or repeated
                return -1
            seen[k], hint = m, k + 1
            p = _skip(data, q + 1, end)
            if p >= end or data[p] != _COLON:
                return -1
            p = _skip(data, p + 1, end)
            if p >= end:
                return -1
            if k == _FIELDS and not inside and data[p] == _OPEN:   # into the fields
                first, last, inside, hint = len(TOP), len(bounds) - 1, True, len(TOP)
                p = _skip(data, p + 1, end)
                if p < end and data[p] != _CLOSE:
                    continue
            elif k == _FIELDS and not inside:
                p = _literal(data, p, end, _NULL)
            else:
                p = _value(data, p, end, holds[k], column[k], -1 if inside else k, numbers, starts, ends, m)
            if p < 0:
                return -1
        p = _skip(data, p, end)                        # after a value: a comma, or the object's end
        if p < end and data[p] == _COMMA:
            p, expect_key = _skip(data, p + 1, end), True
        elif p < end and data[p] == _CLOSE:
            p += 1
            if not inside:
                return p
            first, last, inside, expect_key = 0, len(TOP), False, False
        else:
            return -1


@numba.njit(nogil=True, cache=True)
def _scan(data, message_bounds, names, bounds, column, holds, fast, numbers, starts, ends):
    seen = np.full(len(bounds) - 1, -1, np.int64)
    for m in range(len(message_bounds) - 1):
        start, end = message_bounds[m], message_bounds[m + 1]
        p = _skip(data, start, end)
        ok = False
        if p < end and data[p] == _OPEN:
            p = _message(data, p, end, names, bounds, column, holds, seen, numbers, starts, ends, m)
            ok = p >= 0 and _skip(data, p, end) == end
        fast[m] = ok   # where not, what it wrote stays unused: the careful path reads this message
