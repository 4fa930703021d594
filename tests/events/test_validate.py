from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.validate import LIVE_MAX_AHEAD, RowChecks, blank_mask, time_problem


def test_integers_floats_and_first_reason_wins() -> None:
    checks = RowChecks(5)
    ints = checks.integers(pa.array(["1", " -2 ", "", "3.5", None]), "I1", required=True)
    assert ints.to_pylist() == [1, -2, None, None, None]
    floats = checks.floats(pa.array(["1e3", "x", ".5", "2", "nan?"]), "f")
    assert floats.to_pylist() == [1000.0, None, 0.5, 2.0, None]
    letters = checks.letters("t", np.arange(1, 6), lambda r: f"row{r}")
    assert [(l.position, l.reason, l.raw) for l in letters] == [
        (2, "not_a_number", "row1"), (3, "missing_id", "row2"), (4, "not_a_number", "row3"),
        (5, "missing_id", "row4")]
    assert letters[2].detail == "I1='3.5' is not an integer"


def test_binary_label() -> None:
    checks = RowChecks(5)
    labels = checks.binary_label(pa.array(["0", "1", "2", "", "1.0"]), "click")
    assert labels.type == pa.float32() and checks.bad.tolist() == [False, False, True, True, False]


@pytest.mark.parametrize("text, seconds", [
    ("881250949", 881250949.0), ("1.5", 1.5), ("1998-04-22T23:10:38Z", 893286638.0),
    ("1998-04-22 23:10:38", 893286638.0), ("1998-04-23T01:10:38+02:00", 893286638.0),
    ("2019-11-24 00:00:34.762830+00:00", 1574553634.76283), ("1998-04-22", 893203200.0)])
def test_times_epoch_and_iso(text: str, seconds: float) -> None:
    checks = RowChecks(1)
    assert checks.times(pa.array([text]), "t").to_pylist() == [pytest.approx(seconds)]
    assert not checks.bad.any()


def test_bad_times_mixed_with_good() -> None:
    checks = RowChecks(4)
    out = checks.times(pa.array(["1998-13-40", "100", None, "soon"]), "t")
    assert out.to_pylist() == [None, 100.0, None, None]
    assert checks.bad.tolist() == [True, False, True, True]


def test_blank_mask() -> None:
    assert blank_mask(pa.array(["a", " ", "", None])).tolist() == [False, True, True, True]
    assert blank_mask(pa.array([1, None])).tolist() == [False, True]


def test_times_that_are_not_finite_negative_or_far_ahead_are_bad_times() -> None:
    checks = RowChecks(6)
    now = 1_700_000_000.0
    numbers = [float("inf"), -1.0, 1e300, now + 3600, 881250949.0, float("nan")]   # e.g. a Parquet column
    out = checks.times(pa.array(numbers), "t", now=now)
    assert out.to_pylist()[4] == 881250949.0                    # a 1997 time replays at any date
    assert checks.bad.tolist() == [True, True, True, False, False, True]
    details = [letter.detail for letter in checks.letters("demo", np.arange(6), lambda r: None)]
    assert details[0] == "t=inf is not finite" and details[1] == "t=-1.0 is negative"
    assert "more than 86400 s after the clock of this host" in details[2]


def test_time_problem_for_live_events() -> None:
    now = 1_700_000_000.0
    assert time_problem(now + 299, now, LIVE_MAX_AHEAD) is None
    assert "far in the future" in time_problem(now + 301, now, LIVE_MAX_AHEAD)
    assert time_problem(True, now, LIVE_MAX_AHEAD) == "is not a number of epoch seconds"
    assert time_problem(float("nan"), now, LIVE_MAX_AHEAD) == "is not finite"


def test_a_plus_sign_and_integers_past_int64_parse_or_are_not_numbers_never_an_error() -> None:
    checks = RowChecks(5)    # found by fuzzing: Arrow's cast refused both and the whole read failed
    ints = checks.integers(pa.array(["+5", "9" * 30, "9223372036854775807", "9223372036854775808", "12" * 3000]), "I")
    assert ints.to_pylist() == [5, None, 2**63 - 1, None, None]
    assert checks.bad.tolist() == [False, True, False, True, True]


def test_times_of_any_timestamp_unit_and_integers_past_two_to_the_53_never_fail_to_convert() -> None:
    checks = RowChecks(2)    # found by fuzzing Parquet logs: ns -> us lost data, int64 -> float64 lost digits
    ns = checks.times(pa.array([1_000_000_001, 2**62], pa.timestamp("ns")), "t", now=5e9)
    assert ns.to_pylist() == [1.000000001, 2**62 / 1e9] and checks.bad.tolist() == [False, False]
    far = RowChecks(2)
    assert far.times(pa.array([9_007_199_255, 1], pa.timestamp("s")), "t", now=2e9).to_pylist()[1] == 1.0
    assert far.times(pa.array([2**60, 5], pa.int64()), "t", now=2e9).to_pylist() == [2.0**60, 5.0]
    assert far.bad.tolist() == [True, False]
    assert RowChecks(1).floats(pa.array([2**60 + 1]), "price").to_pylist() == [2.0**60]
