"""The HPA policy: tolerance, stabilisation windows, cooldown, bounds, step limits, metric kinds and reasons.
Times are numbers passed in: nothing here sleeps or reads a clock."""

from __future__ import annotations

import json
import math

import pytest

from freshrec.autoscale.policy import PER_WORKER, Autoscaler, Decision, Policy
from freshrec.config.sections import METRICS, AutoscaleSection


def scaler(**settings) -> Autoscaler:
    return Autoscaler(Policy.from_section(AutoscaleSection(**settings)))


def sizes(autoscaler: Autoscaler, current: int, readings: list[tuple[float, float | None]]) -> list[Decision]:
    """Decisions on `readings` (time, value), the group following each at once."""
    decisions = []
    for now, value in readings:
        decisions.append(decision := autoscaler.decide(now, current, value))
        current = decision.desired
    return decisions


def test_the_documented_reason_reads_as_a_sentence_with_the_numbers():
    decision = scaler(max=8, max_step_up=2).decide(0.0, 1, 20_000)
    assert decision.reason == "lag 20,000 is 4.00x the threshold 5,000 x 1 worker: scale up to 3 (limited to +2 " \
                              "per change)"
    assert (decision.recommended, decision.desired, decision.changed, decision.direction) == (4, 3, True, "up")


@pytest.mark.parametrize(("value", "desired"), [(10_900, 2), (9_100, 2), (11_100, 3), (8_900, 2)])
def test_within_the_tolerance_the_group_holds(value, desired):
    decision = scaler(down_window=0).decide(0.0, 2, value)
    assert decision.desired == desired
    assert ("within the tolerance 0.1" in decision.reason) == (abs(value / 10_000 - 1) <= 0.1)


def test_a_reading_just_off_the_target_rounds_up_but_holds_when_the_formula_gives_current():
    decision = scaler(down_window=0).decide(0.0, 2, 8_900)   # ceil(1.78) = 2
    assert (decision.recommended, decision.desired, decision.reason) == \
        (2, 2, "lag 8,900 is 0.89x the threshold 5,000 x 2 workers: hold at 2")


def test_scale_up_waits_for_the_lowest_recommendation_of_the_up_window():
    decisions = sizes(scaler(up_window=60, cooldown=0), 1,
                      [(0, 4_000), (15, 15_000), (30, 15_000), (45, 15_000), (60, 15_000)])
    assert [d.desired for d in decisions] == [1, 1, 1, 1, 3]
    assert all("up window: the lowest recommendation of the last 1m is 1" in d.reason for d in decisions[1:4])


def test_scale_up_goes_as_far_as_the_up_window_agrees():
    autoscaler = scaler(up_window=60, cooldown=0, max=8)
    assert autoscaler.decide(0.0, 1, 10_000).desired == 2
    decision = autoscaler.decide(15.0, 1, 20_000)          # the group has not grown yet; the window holds 2 and 4
    assert (decision.recommended, decision.desired) == (4, 2)
    assert decision.reason.endswith("scale up to 2 (up window: the lowest recommendation of the last 1m is 2)")


def test_a_dip_inside_the_down_window_does_not_scale_down():
    readings = [(0, 15_000)] + [(t, 2_000) for t in range(15, 150, 15)] + [(t, 15_000) for t in range(150, 900, 15)]
    decisions = sizes(scaler(cooldown=0, max_step_down=4), 3, readings)
    assert {d.desired for d in decisions} == {3}
    assert "down window: the highest recommendation of the last 5m is 3" in decisions[1].reason


def test_after_the_down_window_the_group_scales_down():
    readings = [(0, 15_000)] + [(t, 2_000) for t in range(15, 330, 15)]
    decisions = sizes(scaler(cooldown=0, max_step_down=4), 3, readings)
    changes = [(d.time, d.current, d.desired) for d in decisions if d.changed]
    assert changes == [(300, 3, 1)]      # the 15 000 at t=0 leaves the 300 s window at t=300


def test_cooldown_holds_a_change_until_it_has_passed():
    decisions = sizes(scaler(cooldown=60), 1, [(0, 10_000), (30, 20_000), (59.5, 20_000), (60, 20_000)])
    assert [d.desired for d in decisions] == [2, 2, 2, 4]
    assert "cooldown: would scale up to 4, the last change was 30s ago, 1m between changes" in decisions[1].reason


def test_the_first_decision_is_never_in_cooldown():
    assert scaler(cooldown=3600).decide(1e9, 1, 20_000).desired == 4


@pytest.mark.parametrize(("current", "value", "desired", "rule"), [
    (2, 100_000, 4, "the maximum is 4"), (4, 100_000, 4, "the maximum is 4"),
    (3, 0, 2, "the minimum is 2"), (2, 0, 2, "the minimum is 2")])
def test_recommendations_are_clamped_to_min_and_max(current, value, desired, rule):
    decision = scaler(min=2, max=4, down_window=0, max_step_down=4).decide(0.0, current, value)
    assert decision.desired == decision.recommended == desired
    assert rule in decision.reason


@pytest.mark.parametrize(("current", "value", "desired", "reason"), [
    (6, 5_000 * 6, 4, "6 workers is above the maximum 4: scale down to 4 at once"),
    (1, None, 2, "1 worker is below the minimum 2: scale up to 2 at once"),
    (0, 0.0, 2, "0 workers is below the minimum 2: scale up to 2 at once")])
def test_a_group_outside_the_bounds_is_brought_back_at_once(current, value, desired, reason):
    autoscaler = scaler(min=2, max=4, cooldown=600)
    assert autoscaler.decide(0.0, 3, 30_000).changed                 # a change: cooldown runs until 600 s
    decision = autoscaler.decide(10.0, current, value)               # regardless of cooldown, tolerance, steps
    assert (decision.desired, decision.reason) == (desired, reason)


def test_step_limits_bound_each_change():
    up = scaler(max=10, max_step_up=2).decide(0.0, 1, 40_000)
    assert (up.recommended, up.desired) == (8, 3) and "limited to +2 per change" in up.reason
    down = scaler(max=10, down_window=0, max_step_down=1).decide(0.0, 5, 0.0)
    assert (down.recommended, down.desired) == (1, 4) and "limited to -1 per change" in down.reason


def test_a_percentage_threshold_decides_as_its_fraction():
    readings = [(t, 0.3 + 0.6 * abs(math.sin(t / 100))) for t in range(0, 1800, 15)]
    as_percent = sizes(scaler(metric="gpu_util", threshold="70%"), 1, readings)
    as_fraction = sizes(scaler(metric="gpu_util", threshold=0.7), 1, readings)
    assert as_percent == as_fraction
    assert {d.desired for d in as_percent} != {1}


def test_a_flapping_metric_does_not_flap_the_group():
    """Lag alternating 2x and 0.3x the threshold every 15 s for an hour: up once, never down."""
    readings = [(t, 10_000 if (t // 15) % 2 else 1_500) for t in range(0, 3600, 15)]
    decisions = sizes(scaler(), 1, readings)
    assert [d.direction for d in decisions if d.changed] == ["up"]


@pytest.mark.parametrize("metric", METRICS)
def test_per_worker_metrics_are_totals_against_a_threshold_per_worker(metric):
    decision = scaler(metric=metric, threshold=0.5, max=8).decide(0.0, 2, 1.0)
    if metric in PER_WORKER:   # a total of 1.0 over 2 workers is 0.5 each: on target
        assert (decision.desired, decision.reason) == \
            (2, f"{metric} 1 is 1.00x the threshold 0.5 x 2 workers: hold at 2 (within the tolerance 0.1)")
    else:                      # the group's 1.0 is twice its target: double the group
        assert (decision.desired, decision.reason) == (4, f"{metric} 1 is 2.00x the threshold 0.5: scale up to 4")


@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_a_missing_reading_holds_and_starts_no_cooldown(missing):
    autoscaler = scaler(cooldown=60)
    decision = autoscaler.decide(0.0, 2, missing)
    assert (decision.value, decision.desired, decision.reason) == (None, 2, "no reading of lag: hold at 2")
    assert autoscaler.decide(15.0, 2, 20_000).desired == 4


def test_decisions_serialise_to_one_json_line():
    decision = scaler().decide(12.5, 1, None)
    line = json.dumps(decision.to_json())
    assert "\n" not in line and json.loads(line) == {
        "time": 12.5, "metric": "lag", "value": None, "threshold": 5000.0, "current": 1, "recommended": 1,
        "desired": 1, "direction": "none", "reason": "no reading of lag: hold at 1"}


def test_from_section_takes_durations_in_seconds():
    policy = Policy.from_section(AutoscaleSection(up_window="1m", down_window="5m", cooldown="30s", interval="15s"))
    assert (policy.up_window, policy.down_window, policy.cooldown, policy.interval) == (60.0, 300.0, 30.0, 15.0)
    assert policy == Policy(up_window=60.0)


@pytest.mark.parametrize(("settings", "field"), [
    ({"min": 3, "max": 2}, "Policy.max"), ({"threshold": 0}, "Policy.threshold"), ({"metric": "rps"}, "Policy.metric"),
    ({"tolerance": 1.5}, "Policy.tolerance"), ({"max_step_down": 0}, "Policy.max_step_down")])
def test_a_policy_built_directly_is_validated(settings, field):
    with pytest.raises(ValueError, match=field):
        Policy(**settings)


def test_time_must_not_go_back():
    autoscaler = scaler()
    autoscaler.decide(30.0, 1, 1_000)
    with pytest.raises(ValueError, match="time 15.0 is before the previous decision's 30.0"):
        autoscaler.decide(15.0, 1, 1_000)
