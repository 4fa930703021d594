"""Device-seconds and their cost per class, the saving of an autoscaled group against one sized for
its peak, and a group's device-seconds from its changes of size (times passed in, no clock read)."""

from __future__ import annotations

import pytest

from freshrec.autoscale.cost import CostMeter, GroupClock
from freshrec.autoscale.placement import UNKNOWN_CLASS
from freshrec.config import DeviceClass, FreshrecConfig

CLASSES = FreshrecConfig().devices.classes   # A100 2.9, T4 0.35, ... per device-hour


def test_device_seconds_are_priced_per_class_and_summed():
    meter = CostMeter(CLASSES)
    meter.add("A100", 8, 1800)       # 4 device-hours
    meter.add("A100", 1, 0)
    meter.add("T4", 1, 3600)
    meter.add("T4", 0.5, 3600)       # half a device (shared): 1.5 device-hours of T4 in all
    assert meter.report() == {"device_seconds": {"A100": 14400.0, "T4": 5400.0},
                              "cost": {"A100": 11.6, "T4": 0.525}, "total_cost": 12.125}


def test_figures_are_rounded_to_four_places_and_an_unpriced_class_costs_nothing():
    meter = CostMeter({"A100": CLASSES["A100"], "NVIDIA L4": UNKNOWN_CLASS})
    meter.add("A100", 1, 1.00001)   # 2.9 / 3600 per second
    meter.add("NVIDIA L4", 2, 60)
    assert meter.report() == {"device_seconds": {"A100": 1.0, "NVIDIA L4": 120.0},
                              "cost": {"A100": 0.0008, "NVIDIA L4": 0.0}, "total_cost": 0.0008}
    assert CostMeter(CLASSES).report() == {"device_seconds": {}, "cost": {}, "total_cost": 0.0}


def test_an_unknown_class_or_a_negative_amount_is_refused_naming_it():
    meter = CostMeter(CLASSES)
    with pytest.raises(ValueError, match="device class 'L4' is not one of H100, A100, V100, T4, CPU"):
        meter.add("L4", 1, 10)
    with pytest.raises(ValueError, match="T4: expected devices and seconds >= 0, got -1 devices for 10 s"):
        meter.add("T4", -1, 10)
    with pytest.raises(ValueError, match="got 1 devices for -5 s"):
        meter.static_cost("T4", 1, -5)
    with pytest.raises(ValueError, match="device class 'X' is not one of none"):
        CostMeter({}).add("X", 1, 1)
    with pytest.raises(ValueError, match="static_cost: expected a cost >= 0, got -1"):
        meter.compare(-1)


def test_an_autoscaled_group_is_set_against_one_sized_for_its_peak():
    """A day's replay: 8 A100 for the 3 busiest hours, 2 for the other 21 (the article's load)."""
    meter = CostMeter(CLASSES)
    meter.add("A100", 8, 3 * 3600)
    meter.add("A100", 2, 21 * 3600)
    static = meter.static_cost("A100", 8, 24 * 3600)
    assert static == pytest.approx(556.8)
    assert meter.compare(static) == {"cost": 191.4, "static_cost": 556.8, "saving": 0.6562}
    assert CostMeter(CLASSES).compare(0.0) == {"cost": 0.0, "static_cost": 0.0, "saving": None}


def test_the_group_clock_integrates_workers_over_time():
    clock = GroupClock()
    clock.changed(100.0, 2)
    clock.changed(100.0, 3)    # set twice at once: no time at 2
    clock.changed(160.0, 8)
    clock.changed(160.0, 8)
    clock.changed(220.0, 0)    # scaled to zero
    assert clock.spans == [(3, 60.0), (8, 60.0)] and clock.device_seconds == 660.0
    assert clock.close(400.0) == 660.0
    assert (clock.peak, clock.elapsed, clock.spans[-1]) == (8, 300.0, (0, 180.0))


def test_the_group_clock_feeds_the_meter():
    clock = GroupClock()
    for now, workers in [(0, 1), (900, 4), (1800, 1)]:
        clock.changed(now, workers)
    clock.close(3600)
    meter = CostMeter({"A100": DeviceClass(cost_per_hour=4.0, speed=1.0, tier="hot")})
    for workers, seconds in clock.spans:
        meter.add("A100", workers, seconds)
    assert meter.report()["total_cost"] == 7.0   # (900 + 3600 + 1800) s / 3600 x 4
    assert meter.compare(meter.static_cost("A100", clock.peak, clock.elapsed))["saving"] == 0.5625


def test_the_group_clock_refuses_time_going_back_and_changes_after_the_close():
    assert GroupClock().close(5.0) == 0.0
    clock = GroupClock()
    clock.changed(10.0, 2)
    with pytest.raises(ValueError, match="now: 9.0 is before the last change, at 10.0"):
        clock.changed(9.0, 1)
    with pytest.raises(ValueError, match="workers: expected >= 0, got -1"):
        clock.changed(11.0, -1)
    clock.close(12.0)
    with pytest.raises(ValueError, match="the clock was closed: no change at 13.0"):
        clock.changed(13.0, 1)
    with pytest.raises(ValueError, match="the clock was closed"):
        clock.close(14.0)
