"""Durations: the spellings accepted, the ones refused, and the way back to text."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from freshrec.config import DURATION_HELP, Duration, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("6h", 21600.0), ("1d", 86400.0), ("250ms", 0.25), ("1.5h", 5400.0),
    ("0", 0.0), ("90", 90.0), (" 2 h ", 7200.0), (".5s", 0.5), (45, 45.0), (2.5, 2.5), ("1e3", 1000.0)])
def test_accepted_spellings(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["6x", "-1h", "h", "", "1h30m", "six hours", -1, True, None, float("inf"),
                                 float("nan"), [1], "nan", "inf"])
def test_refused_spellings_say_what_is_allowed(bad):
    with pytest.raises(ValueError, match="like 30s, 5m, 6h, 1d") as error:
        parse_duration(bad)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1.0, 30.0, 90.0, 300.0, 5400.0, 21600.0, 86400.0, 172800.0,
                                     0.3, 1.2345, 1e-5, 3601.5, 1e12])
def test_format_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_picks_the_largest_whole_unit():
    assert [format_duration(s) for s in (21600.0, 5400.0, 86400.0, 0.25, 61.0, 0.0)] == \
        ["6h", "90m", "1d", "250ms", "61s", "0s"]


def test_pydantic_type_stores_seconds_and_serialises_a_spelling():
    class Timer(BaseModel):
        every: Duration = 1.0

    timer = Timer(every="6h")
    assert timer.every == 21600.0
    assert timer.model_dump() == {"every": 21600.0}
    assert timer.model_dump(mode="json") == {"every": "6h"}
    with pytest.raises(ValidationError) as error:
        Timer(every="6x")
    assert error.value.errors()[0]["type"] == "duration"
    assert error.value.errors()[0]["msg"] == DURATION_HELP
