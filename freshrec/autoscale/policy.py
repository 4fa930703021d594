"""The scaling policy, Kubernetes HPA's: `Autoscaler.decide(now, current, value)` -> a `Decision`.

Each reading gives a recommendation: `current` while value / target is within 1 +- `tolerance`, else
ceil(current x value / threshold) (for a `PER_WORKER` metric, whose reading is the group's total:
ceil(value / threshold)), clamped to `min`..`max`. Stabilisation acts on the lowest recommendation of
the last `up_window` seconds when scaling up and on the highest of the last `down_window` when scaling
down, never past `current`; then at most `max_step_up` / `max_step_down` workers per change, and no
change within `cooldown` seconds of the last one. A group outside `min`..`max` is brought back at once;
a missing reading holds. Time is passed in (the autoscaler never reads a clock).

>>> scaler = Autoscaler(Policy(metric="lag", threshold=5000, max=4, max_step_up=2))
>>> scaler.decide(0.0, current=1, value=12_000).reason
'lag 12,000 is 2.40x the threshold 5,000 x 1 worker: scale up to 3'
>>> scaler.decide(15.0, current=3, value=40_000).reason
'lag 40,000 is 2.67x the threshold 5,000 x 3 workers: hold at 3 (cooldown: would scale up to 4, \
the last change was 15s ago, 30s between changes)'
>>> decision = scaler.decide(60.0, current=3, value=2_000)
>>> decision.recommended, decision.desired, decision.direction
(1, 3, 'none')
>>> decision.reason
'lag 2,000 is 0.13x the threshold 5,000 x 3 workers: hold at 3 (down window: the highest recommendation \
of the last 5m is 4)'
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields

from freshrec.config.durations import format_duration
from freshrec.config.sections import METRICS, AutoscaleSection

__all__ = ["PER_WORKER", "Autoscaler", "Decision", "Policy"]

PER_WORKER = frozenset({"lag", "events_per_s"})
"""Metrics read as the group's total against a per-worker threshold (HPA AverageValue); the others are
the group's mean utilisation (0..1) or its seconds, against a threshold for the group."""

_DEFAULTS = AutoscaleSection()


@dataclass(frozen=True)
class Policy:
    """The autoscale section's settings that `Autoscaler` follows (durations in seconds)."""

    metric: str = _DEFAULTS.metric
    threshold: float = _DEFAULTS.threshold
    min: int = _DEFAULTS.min
    max: int = _DEFAULTS.max
    tolerance: float = _DEFAULTS.tolerance
    up_window: float = _DEFAULTS.up_window
    down_window: float = _DEFAULTS.down_window
    cooldown: float = _DEFAULTS.cooldown
    max_step_up: int = _DEFAULTS.max_step_up
    max_step_down: int = _DEFAULTS.max_step_down
    interval: float = _DEFAULTS.interval

    def __post_init__(self) -> None:
        rules = (("metric", self.metric in METRICS, f"one of {', '.join(METRICS)}"),
                 ("threshold", 0 < self.threshold < math.inf, "a positive number"),
                 ("min", self.min >= 1, "at least 1"), ("max", self.max >= self.min, f"at least min ({self.min})"),
                 ("tolerance", 0 <= self.tolerance < 1, "in [0, 1)"),
                 ("up_window", self.up_window >= 0, "at least 0"), ("down_window", self.down_window >= 0, "at least 0"),
                 ("cooldown", self.cooldown >= 0, "at least 0"), ("max_step_up", self.max_step_up >= 1, "at least 1"),
                 ("max_step_down", self.max_step_down >= 1, "at least 1"), ("interval", self.interval > 0, "positive"))
        for name, holds, rule in rules:
            if not holds:
                raise ValueError(f"Policy.{name} must be {rule}, got {getattr(self, name)!r}")

    @classmethod
    def from_section(cls, section: AutoscaleSection) -> Policy:
        """The policy of the config's `autoscale` section."""
        return cls(**{field.name: getattr(section, field.name) for field in fields(cls)})


@dataclass(frozen=True)
class Decision:
    """One reading's outcome: `recommended` is the clamped formula before stabilisation, step limits and
    cooldown; `desired` is the size to scale to; `reason` says why, with the numbers."""

    time: float
    metric: str
    value: float | None
    threshold: float
    current: int
    recommended: int
    desired: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    @property
    def direction(self) -> str:
        """The change: "up", "down" or "none"."""
        return "up" if self.desired > self.current else "down" if self.desired < self.current else "none"

    def to_json(self) -> dict[str, object]:
        """The decision as one JSON line's object."""
        return {"time": self.time, "metric": self.metric, "value": self.value, "threshold": self.threshold,
                "current": self.current, "recommended": self.recommended, "desired": self.desired,
                "direction": self.direction, "reason": self.reason}


class Autoscaler:
    """The desired group size for each reading, remembering recent recommendations and the last change."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._recommendations: deque[tuple[float, int]] = deque()   # (time, recommendation), oldest first
        self._last_change: float | None = None
        self._last_time = -math.inf

    def decide(self, now: float, current: int, value: float | None) -> Decision:
        """What to scale the group of `current` workers to, given the metric's `value` at time `now`."""
        if now < self._last_time:
            raise ValueError(f"time {now!r} is before the previous decision's {self._last_time!r}")
        self._last_time = now
        p = self.policy
        if value is not None and not math.isfinite(value):
            value = None
        if not p.min <= current <= p.max:
            bound, side = (p.min, "below the minimum") if current < p.min else (p.max, "above the maximum")
            return self._decided(now, current, value, bound, bound,
                                 f"{_workers(current)} is {side} {bound}: {_action(current, bound)} at once")
        if value is None:
            return self._decided(now, current, None, current, current, f"no reading of {p.metric}: hold at {current}")
        notes: list[str] = []
        per_worker = p.metric in PER_WORKER
        ratio = value / (current * p.threshold) if per_worker else value / p.threshold
        reading = (f"{p.metric} {_number(value)} is {ratio:.2f}x the threshold {_number(p.threshold)}"
                   + (f" x {_workers(current)}" if per_worker else ""))
        if abs(ratio - 1) <= p.tolerance:
            raw = current
            notes.append(f"within the tolerance {p.tolerance:g}")
        else:   # rounded first, so float noise (2.0000000000000004) does not add a worker
            raw = math.ceil(round(value / p.threshold if per_worker else current * ratio, 9))
        recommended = min(max(raw, p.min), p.max)
        desired = self._stabilised(now, current, recommended, notes)
        step = min(max(desired, current - p.max_step_down), current + p.max_step_up)
        if step != desired:
            notes.append(f"limited to {step - current:+d} per change")
        desired = step
        if desired != current and self._last_change is not None and now - self._last_change < p.cooldown:
            since = format_duration(round(now - self._last_change, 1))
            notes.append(f"cooldown: would {_action(current, desired)}, the last change was {since} ago, "
                         f"{format_duration(p.cooldown)} between changes")
            desired = current
        if recommended != raw and desired == recommended:
            notes.insert(0, f"the {'minimum' if raw < p.min else 'maximum'} is {recommended}")
        return self._decided(now, current, value, recommended, desired,
                             f"{reading}: {_action(current, desired)}" + (f" ({'; '.join(notes)})" if notes else ""))

    def _stabilised(self, now: float, current: int, recommended: int, notes: list[str]) -> int:
        """`current` moved toward the lowest recommendation of the up window and the highest of the down window."""
        p, history = self.policy, self._recommendations
        while history and history[0][0] <= now - max(p.up_window, p.down_window):
            history.popleft()
        lowest = min([r for t, r in history if t > now - p.up_window] + [recommended])
        highest = max([r for t, r in history if t > now - p.down_window] + [recommended])
        history.append((now, recommended))
        stabilised = min(max(current, lowest), highest)
        if recommended > current and stabilised < recommended:
            notes.append(f"up window: the lowest recommendation of the last {format_duration(p.up_window)} is {lowest}")
        elif recommended < current and stabilised > recommended:
            notes.append(f"down window: the highest recommendation of the last {format_duration(p.down_window)} "
                         f"is {highest}")
        return stabilised

    def _decided(self, now: float, current: int, value: float | None, recommended: int, desired: int,
                 reason: str) -> Decision:
        if desired != current:
            self._last_change = now
        return Decision(now, self.policy.metric, value, self.policy.threshold, current, recommended, desired, reason)


def _action(current: int, desired: int) -> str:
    if desired == current:
        return f"hold at {current}"
    return f"scale {'up' if desired > current else 'down'} to {desired}"


def _workers(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")


def _number(value: float) -> str:
    """12,000 / 1,234.5 / 0.912: thousands separated, three significant digits below 100."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
