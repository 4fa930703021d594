"""`Controller`: the autoscaler's loop: every `interval` seconds read the metric, let the policy decide,
log the decision (JSON line and Prometheus gauges) and, when it changes the group's size, tell the
executor; until the group ends (its stream did) or `stop` is set.

An executor has `current()`, `scale(workers)` and `finished()` (None while the group runs, else its
exit code): `LocalExecutor` (torchrun agents on this machine) or `KubernetesExecutor` (a
StatefulSet's replicas, which never finishes on its own).

>>> import threading
>>> from freshrec.autoscale.decisions import DecisionLog
>>> from freshrec.autoscale.policy import Autoscaler, Policy
>>> class Group:   # a stand-in group that ends after three readings
...     def __init__(self): self.size, self.reads = 1, 0
...     def current(self): return self.size
...     def scale(self, workers): self.size = workers
...     def finished(self): return 0 if self.reads >= 3 else None
>>> class Lag:
...     def __init__(self, group): self.group = group
...     def read(self, now): self.group.reads += 1; return 30_000.0
>>> group = Group()
>>> policy = Policy(metric="lag", threshold=10_000, min=1, max=3, tolerance=0.1, up_window=0, down_window=0,
...                 cooldown=0, max_step_up=1, max_step_down=1, interval=0.01)
>>> controller = Controller(Autoscaler(policy), Lag(group), group, DecisionLog(None))
>>> controller.run(threading.Event()), controller.sizes
(0, [1, 2, 3])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Controller"]


class Controller:
    """Ties a policy (`autoscaler`), a metric `reader`, an `executor` and a decision `log` together;
    `sizes`: the group's size after each change (the first: its size at the start); `on_change(now,
    workers)` hears each change (a cost meter's clock)."""

    def __init__(self, autoscaler, reader, executor, log, on_change: Callable[[float, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.autoscaler, self.reader, self.executor, self.log = autoscaler, reader, executor, log
        self.on_change, self.clock = on_change, clock
        self.sizes: list[int] = []
        self.decisions = 0

    def run(self, stop: threading.Event) -> int | None:
        """Decide every `policy.interval` seconds until the group ends (its exit code) or `stop` is set (None)."""
        self.sizes.append(self.executor.current())
        interval = self.autoscaler.policy.interval
        while not stop.is_set():
            code = self.executor.finished()
            if code is not None:
                return code
            self.step()
            stop.wait(interval)
        return None

    def step(self) -> None:
        """One reading, one decision, and the change it asks for."""
        now = self.clock()
        current = self.executor.current()
        decision = self.autoscaler.decide(now, current, self.reader.read(now))
        self.log.record(decision)
        self.decisions += 1
        if decision.desired != current:
            self.executor.scale(decision.desired)
            self.sizes.append(decision.desired)
            if self.on_change is not None:
                self.on_change(self.clock(), decision.desired)
