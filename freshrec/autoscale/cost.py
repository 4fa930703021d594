"""What a run's devices cost: device-seconds per device class, priced with the classes'
`cost_per_hour` (`CostMeter`), and the device-seconds of a group whose size changes (`GroupClock`),
so that an autoscaled run can be set against a group sized for its peak all the time.

>>> from freshrec.config import DeviceClass
>>> clock = GroupClock()
>>> for now, workers in [(0, 2), (600, 8), (1200, 2)]:
...     clock.changed(now, workers)
>>> clock.close(3600)
10800.0
>>> meter = CostMeter({"A100": DeviceClass(cost_per_hour=3.0, speed=1.0, tier="hot")})
>>> for workers, seconds in clock.spans:
...     meter.add("A100", workers, seconds)
>>> meter.compare(meter.static_cost("A100", clock.peak, clock.elapsed))
{'cost': 9.0, 'static_cost': 24.0, 'saving': 0.625}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freshrec.config import DeviceClass, FreshrecConfig
from freshrec.devices import class_of

__all__ = ["CostMeter", "GroupClock", "billed_class", "run_cost"]


class CostMeter:
    """Device-seconds per class of `classes` (e.g. `Placement.classes`, or `devices.classes`) and what they cost."""

    def __init__(self, classes: Mapping[str, DeviceClass]) -> None:
        self.classes = dict(classes)
        self.device_seconds: dict[str, float] = {}

    def add(self, class_name: str, devices: float, seconds: float) -> None:
        """`devices` devices of `class_name` used for `seconds`. ValueError naming an unknown class
        (with the known ones) or a negative amount."""
        self._check(class_name, devices, seconds)
        self.device_seconds[class_name] = self.device_seconds.get(class_name, 0.0) + devices * seconds

    def report(self) -> dict[str, Any]:
        """`device_seconds` and `cost` per class (device-hours x cost_per_hour) and `total_cost`, rounded to 4 places.

        >>> meter = CostMeter({"T4": DeviceClass(cost_per_hour=0.35, speed=0.2, tier="cold")})
        >>> meter.add("T4", 2, 5400)
        >>> meter.report()
        {'device_seconds': {'T4': 10800.0}, 'cost': {'T4': 1.05}, 'total_cost': 1.05}
        """
        cost = self._costs()
        return {"device_seconds": {name: round(s, 4) for name, s in self.device_seconds.items()},
                "cost": {name: round(c, 4) for name, c in cost.items()},
                "total_cost": round(sum(cost.values(), 0.0), 4)}

    def static_cost(self, class_name: str, devices: float, seconds: float) -> float:
        """What `devices` devices of `class_name` held for `seconds` cost (e.g. a group sized for the peak)."""
        self._check(class_name, devices, seconds)
        return devices * seconds / 3600 * self.classes[class_name].cost_per_hour

    def compare(self, static_cost: float) -> dict[str, float | None]:
        """This meter's total `cost` against `static_cost` (see `static_cost`): `saving` = 1 - cost /
        static_cost (None where static_cost is 0), rounded to 4 places."""
        if static_cost < 0:
            raise ValueError(f"static_cost: expected a cost >= 0, got {static_cost}")
        cost = sum(self._costs().values(), 0.0)
        saving = round(1 - cost / static_cost, 4) if static_cost else None
        return {"cost": round(cost, 4), "static_cost": round(static_cost, 4), "saving": saving}

    def _costs(self) -> dict[str, float]:
        """Device-hours x cost_per_hour per class, unrounded."""
        return {name: s / 3600 * self.classes[name].cost_per_hour for name, s in self.device_seconds.items()}

    def _check(self, class_name: str, devices: float, seconds: float) -> None:
        if class_name not in self.classes:
            raise ValueError(f"device class {class_name!r} is not one of {', '.join(self.classes) or 'none'}")
        if devices < 0 or seconds < 0:
            raise ValueError(f"{class_name}: expected devices and seconds >= 0, got {devices} devices for {seconds} s")


class GroupClock:
    """The size of a group over a run, from its changes: `changed(now, workers)` each time the
    group's size is set (the first call starts the clock), `close(now)` at the end. `spans`: (workers,
    seconds) for each stretch of a size, so far; `peak`: the most workers; `elapsed`: the seconds so
    far. Times are passed in (any clock, seconds), so it meters a replay as well as a live run."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, float]] = []
        self.peak = 0
        self._last: tuple[float, int] | None = None   # (time, workers) of the last change
        self._closed = False

    def changed(self, now: float, workers: int) -> None:
        """The group has `workers` workers from `now` on. ValueError where the clock is closed, `now`
        is before the last change or `workers` is negative."""
        if workers < 0:
            raise ValueError(f"workers: expected >= 0, got {workers}")
        self._advance(now)
        self._last = (now, workers)
        self.peak = max(self.peak, workers)

    def close(self, now: float) -> float:
        """End the run at `now`; the group's device-seconds (sum of workers x seconds)."""
        self._advance(now)
        self._closed = True
        return self.device_seconds

    @property
    def device_seconds(self) -> float:
        """Workers x seconds, summed over the spans so far."""
        return float(sum(workers * seconds for workers, seconds in self.spans))

    @property
    def elapsed(self) -> float:
        """Seconds from the first change to the last change (or the close)."""
        return sum(seconds for _, seconds in self.spans)

    def _advance(self, now: float) -> None:
        """Close the span of the last change at `now`."""
        if self._closed:
            raise ValueError(f"the clock was closed: no change at {now} after the end of the run")
        if self._last is None:
            return
        since, workers = self._last
        if now < since:
            raise ValueError(f"now: {now} is before the last change, at {since}")
        if now > since:
            self.spans.append((workers, float(now - since)))


def billed_class(config: FreshrecConfig, gpu_name: str | None) -> str:
    """The device class a run's workers count as: CPU when they learn on the CPU (`gpu_name` None), else
    `gpu.type`, or the class the GPU's name (as torch or NVML gives it) belongs to, or that name.

    >>> billed_class(FreshrecConfig(), None), billed_class(FreshrecConfig(), "NVIDIA A100-SXM4-80GB")
    ('CPU', 'A100')
    """
    if gpu_name is None:
        return "CPU"
    if config.gpu.type != "none":
        return config.gpu.type
    return class_of(gpu_name, config.devices.classes) or gpu_name


def run_cost(config: FreshrecConfig, class_name: str, clock: GroupClock, peak: int | None = None) -> dict:
    """What a run's report says about cost: device-seconds of `class_name` (the group's, from `clock`), the
    class's price per hour and the cost; with `peak`, also what a group of `peak` workers all along would
    have cost and the `saving`. A class `devices.classes` does not price: device-seconds only, and a note.

    >>> clock = GroupClock(); clock.changed(0, 1); clock.changed(1800, 3); _ = clock.close(3600)
    >>> run_cost(FreshrecConfig(), "T4", clock, peak=3)
    {'device_seconds': {'T4': 7200.0}, 'cost': {'T4': 0.7}, 'total_cost': 0.7, 'prices': {'T4': 0.35}, \
'peak_sized_cost': 1.05, 'saving': 0.3333}
    """
    classes = config.devices.classes
    if class_name not in classes:
        return {"device_seconds": {class_name: round(clock.device_seconds, 4)}, "cost": None,
                "note": f"devices.classes has no price for {class_name!r}: add it to estimate the cost"}
    meter = CostMeter(classes)
    meter.add(class_name, 1, clock.device_seconds)
    report = {**meter.report(), "prices": {class_name: classes[class_name].cost_per_hour}}
    if peak is not None:
        compared = meter.compare(meter.static_cost(class_name, peak, clock.elapsed))
        report.update(peak_sized_cost=compared["static_cost"], saving=compared["saving"])
    return report
