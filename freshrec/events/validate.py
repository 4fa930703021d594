"""Vectorised parsing and validation of raw text columns, keeping the first reason per bad row.

Readers load columns as strings, parse them here with Arrow compute kernels (no Python loop
per record), and turn each bad row into a `DeadLetter` with its position and reason.

Event times follow one rule everywhere (`time_problem` for one value, `RowChecks.times` for a
column): a time is a finite, non-negative number of epoch seconds, and not "far in the future",
i.e. not more than `max_ahead` seconds after the wall clock when it is checked. Live events
(`POST /events`, Kafka) get `LIVE_MAX_AHEAD` (5 minutes: clock skew between a client and this
host); replayed files get `REPLAY_MAX_AHEAD` (1 day: a naive local-time export read as UTC can be
up to 14 hours ahead). A recorded data set's events all happened before it is read, so historic
replays (MovieLens 1997, Avazu 2014, Criteo's line numbers) stay valid however old they are. The
wall clock rather than the stream's own watermark bounds replays because a watermark rule would
reject every row after a legitimate gap in the data (or in an unsorted file), losing the rest of
the stream; the wall clock is a bound no real event can pass.

>>> import pyarrow as pa, numpy as np
>>> checks = RowChecks(3)
>>> ints = checks.integers(pa.array(["1", "x", "-3"]), "I1")
>>> ints.to_pylist(), checks.bad.tolist()
([1, None, -3], [False, True, False])
>>> [l.reason for l in checks.letters("demo", np.array([1, 2, 3]), lambda i: None)]
['not_a_number']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.deadletter import DeadLetter

_INT_PATTERN = r"^\s*[-+]?[0-9]+\s*$"
_FLOAT_PATTERN = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
LIVE_MAX_AHEAD = 300.0
REPLAY_MAX_AHEAD = 86_400.0


def time_problem(ts: object, now: float, max_ahead: float) -> str | None:
    """Why `ts` is not a valid event time when the wall clock reads `now`, or None.

    >>> time_problem(1_700_000_000.0, now=1_700_000_000.0, max_ahead=300.0) is None
    True
    >>> time_problem(float("inf"), 0.0, 300.0), time_problem(-1, 0.0, 300.0), time_problem("1", 0.0, 300.0)
    ('is not finite', 'is negative', 'is not a number of epoch seconds')
    >>> time_problem(1e300, now=1_700_000_000.0, max_ahead=300.0)
    'is more than 300 s after the clock of this host (1700000000): far in the future'
    """
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "is not a number of epoch seconds"
    if not math.isfinite(ts):
        return "is not finite"
    if ts < 0:
        return "is negative"
    if ts > now + max_ahead:
        return f"is more than {max_ahead:g} s after the clock of this host ({now:.0f}): far in the future"
    return None


def blank_mask(values: pa.Array) -> np.ndarray:
    """True where a value is null, or a string that is empty after trimming blanks."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        blank = pc.equal(pc.utf8_trim_whitespace(values), "")
        return pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
    return values.is_null().to_numpy(zero_copy_only=False)


def _cast_checked(values: pa.Array, target: pa.DataType, pattern: str) -> tuple[pa.Array, np.ndarray]:
    """Cast strings to `target`; empty -> null; returns (array, mask of unparseable non-empty values)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        rounds = pa.types.is_integer(values.type) and pa.types.is_floating(target)   # past 2**53: the nearest
        return values.cast(target, safe=not rounds), np.zeros(len(values), dtype=bool)
    empty = blank_mask(values)
    cleaned = pc.if_else(pa.array(empty), pa.scalar(None, values.type), values)
    try:
        return pc.cast(pc.utf8_trim_whitespace(cleaned), target), np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:
        ok = pc.fill_null(pc.match_substring_regex(cleaned, pattern), True).to_numpy(zero_copy_only=False)
        text = pc.utf8_trim_whitespace(pc.if_else(pa.array(ok), cleaned, pa.scalar(None, values.type)))
        if pa.types.is_integer(target):   # Arrow takes no '+' and no digits past the type's range
            text = pc.replace_substring_regex(text, r"^\+", "")
            ok &= _fits(text, target)
            text = pc.if_else(pa.array(ok), text, pa.scalar(None, values.type))
        return pc.cast(text, target), ~ok


def _fits(text: pa.Array, target: pa.DataType) -> np.ndarray:
    """Whether each integer text (or null) is in the range of the integer type `target` (a Python
    check only for the texts long enough to be out of range)."""
    info = np.iinfo(target.to_pandas_dtype())
    long = np.flatnonzero(pc.fill_null(pc.greater(pc.utf8_length(text), len(str(info.max)) - 1), False))
    fits = np.ones(len(text), dtype=bool)
    fits[long] = [_in_range(text[int(r)].as_py(), info.min, info.max) for r in long]
    return fits


def _in_range(text: str, low: int, high: int) -> bool:
    digits = text.lstrip("-").lstrip("0") or "0"
    return len(digits) <= len(str(high)) and low <= int(text[0] + digits if text[0] == "-" else digits) <= high


class RowChecks:
    """Collects per-row problems over `n` rows; the first reason found for a row is kept."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self._reason = np.full(n, "", dtype=object)
        self._detail = np.full(n, "", dtype=object)

    def reject(self, mask: np.ndarray, reason: str, detail: Callable[[int], str]) -> None:
        """Mark rows in `mask` bad with `reason`; `detail(row)` explains one row."""
        new = np.flatnonzero(mask & ~self.bad)
        for row in new:
            self._reason[row] = reason
            self._detail[row] = detail(int(row))
        self.bad[new] = True

    def integers(self, values: pa.Array, name: str, required: bool = False) -> pa.Array:
        """Parse an integer column; bad text -> `not_a_number`, empty and required -> `missing_id`."""
        parsed, bad = _cast_checked(values, pa.int64(), _INT_PATTERN)
        self.reject(bad, "not_a_number", lambda r: f"{name}={values[r].as_py()!r} is not an integer")
        if required:
            self.require(parsed, name)
        return parsed

    def floats(self, values: pa.Array, name: str) -> pa.Array:
        """Parse a float column; bad text -> `not_a_number`; empty -> null."""
        parsed, bad = _cast_checked(values, pa.float64(), _FLOAT_PATTERN)
        self.reject(bad, "not_a_number", lambda r: f"{name}={values[r].as_py()!r} is not a number")
        return parsed

    def require(self, values: pa.Array, name: str) -> None:
        """Rows where `values` is null or empty -> `missing_id`."""
        self.reject(blank_mask(values), "missing_id", lambda r: f"{name} is missing")

    def binary_label(self, values: pa.Array, name: str) -> pa.Array:
        """A 0/1 label as float32; other values -> `bad_label`, empty -> `bad_label`."""
        parsed = self.floats(values, name) if not pa.types.is_floating(values.type) else values
        ok = pc.fill_null(pc.is_in(parsed, pa.array([0.0, 1.0])), False).to_numpy(zero_copy_only=False)
        self.reject(~ok, "bad_label", lambda r: f"{name}={values[r].as_py()!r} is not 0 or 1")
        return pc.cast(parsed, pa.float32())

    def times(self, values: pa.Array, name: str, now: float | None = None,
              max_ahead: float = REPLAY_MAX_AHEAD) -> pa.Array:
        """Event time as float64 epoch seconds from numbers or ISO-8601 text (naive = UTC).

        Unparseable, missing, not finite, negative or more than `max_ahead` seconds after `now`
        (default: the wall clock) -> `bad_time` (see the module's rule).
        """
        if pa.types.is_timestamp(values.type):
            seconds = _timestamp_seconds(values)
        elif not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            seconds = pc.cast(values, pa.float64(), safe=not pa.types.is_integer(values.type))
        else:
            numeric = pc.fill_null(pc.match_substring_regex(values, _FLOAT_PATTERN), False)
            epoch = pc.cast(pc.utf8_trim_whitespace(
                pc.if_else(numeric, values, pa.scalar(None, values.type))), pa.float64())
            if pc.all(pc.or_(numeric, values.is_null())).as_py():
                seconds = epoch
            else:
                iso = _iso_seconds(pc.if_else(numeric, pa.scalar(None, values.type), values))
                seconds = pc.if_else(numeric, epoch, iso)
        missing = seconds.is_null().to_numpy(zero_copy_only=False)
        self.reject(missing, "bad_time", lambda r: f"{name}={values[r].as_py()!r} is not a time")
        self.out_of_range(seconds, name, now, max_ahead)
        return seconds

    def out_of_range(self, seconds: pa.Array, name: str, now: float | None = None,
                     max_ahead: float = REPLAY_MAX_AHEAD) -> None:
        """`bad_time` for parsed epoch seconds that `time_problem` refuses (nulls are left alone)."""
        now = time.time() if now is None else now
        numbers = pc.fill_null(seconds, 0.0).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(numbers) | (numbers < 0) | (numbers > now + max_ahead)
        self.reject(wrong, "bad_time",
                    lambda r: f"{name}={float(numbers[r])!r} {time_problem(float(numbers[r]), now, max_ahead)}")

    def letters(self, source: str, positions: np.ndarray,
                raw: Callable[[int], str | None]) -> list[DeadLetter]:
        """One `DeadLetter` per bad row; `raw(row)` gives the record's text where known."""
        return [DeadLetter(source, int(positions[r]), self._reason[r], self._detail[r], raw(int(r)))
                for r in np.flatnonzero(self.bad)]


_ZONED = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"


_TICKS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _timestamp_seconds(values: pa.Array) -> pa.Array:
    """Timestamps of any unit as float64 epoch seconds (never out of range: the ticks go to float64)."""
    ticks = pc.cast(pc.cast(values, pa.int64()), pa.float64(), safe=False)
    return pc.divide(ticks, _TICKS_PER_SECOND[values.type.unit])


def _cast_time_or_null(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast strings to a timestamp; on failure, cast value by value (the error path only)."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        out = []
        for value in values:
            try:
                out.append(pc.cast(pa.array([value.as_py()], values.type), target)[0].as_py())
            except pa.ArrowInvalid:
                out.append(None)
        return pa.array(out, target)


def _iso_seconds(values: pa.Array) -> pa.Array:
    """ISO-8601 strings (with or without zone; naive means UTC) -> float64 epoch seconds."""
    text = pc.utf8_trim_whitespace(values)
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONED), False)
    naive_part = pc.if_else(zoned, pa.scalar(None, text.type), text)
    zoned_part = pc.if_else(zoned, text, pa.scalar(None, text.type))
    naive = _timestamp_seconds(_cast_time_or_null(naive_part, pa.timestamp("us")))
    aware = _timestamp_seconds(_cast_time_or_null(zoned_part, pa.timestamp("us", tz="UTC")))
    return pc.if_else(zoned, aware, naive)
