"""Durations in the config: `30s`, `5m`, `6h`, `1d`, `250ms`, `1.5h`, or a plain number of seconds.

`Duration` is the pydantic type (seconds as a float inside; written back as `6h` in JSON mode).

>>> parse_duration("6h"), parse_duration("250ms"), parse_duration(90)
(21600.0, 0.25, 90.0)
>>> format_duration(21600.0), format_duration(5400.0), format_duration(0.25), format_duration(1.2345)
('6h', '90m', '250ms', '1.2345s')
>>> parse_duration("6x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: expected a non-negative duration like 30s, 5m, 6h, 1d (...), got '6x'
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer
from pydantic_core import PydanticCustomError

__all__ = ["DURATION_HELP", "Duration", "format_duration", "parse_duration"]

DURATION_HELP = "a non-negative duration like 30s, 5m, 6h, 1d (units ms, s, m, h, d; a plain number is seconds)"
UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PATTERN = re.compile(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s|m|h|d)?\s*")


def parse_duration(value: Any) -> float:
    """Seconds in `value`: a number (seconds) or a string of a number and an optional unit."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.fullmatch(value)):
        seconds = float(match[1]) * UNITS[match[2] or "s"]
    if seconds is None or not 0.0 <= seconds < math.inf:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The spelling of `seconds` in the largest whole unit, else in seconds (`parse_duration` gives it back)."""
    if seconds == 0:
        return "0s"
    for unit, size in UNITS.items():
        count = round(seconds / size)
        if count >= 1 and count * size == seconds:
            return f"{count}{unit}"
    return f"{float(seconds)!r}s"


def _validate(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise PydanticCustomError("duration", DURATION_HELP) from None


Duration = Annotated[float, BeforeValidator(_validate), PlainSerializer(format_duration, return_type=str,
                                                                        when_used="json")]
"""Seconds (float) read from a duration spelling; serialised back to one in JSON mode."""
