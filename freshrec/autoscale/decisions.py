"""`DecisionLog`: every autoscale decision as one JSON line (a file for the record, flushed at once) and
as Prometheus figures on a registry of its own: `freshrec_autoscale_workers{state="current"|"desired"}`,
`freshrec_autoscale_metric_value{metric}` (NaN after a missed reading), `freshrec_autoscale_threshold{metric}`
and `freshrec_autoscale_changes_total{direction="up"|"down"}`.

>>> import json, pathlib, tempfile
>>> from prometheus_client import generate_latest
>>> from freshrec.autoscale.policy import Autoscaler, Policy
>>> path = pathlib.Path(tempfile.mkdtemp()) / "decisions.jsonl"
>>> log = DecisionLog(path)
>>> log.record(Autoscaler(Policy(threshold=5000)).decide(0.0, current=1, value=12_000))
>>> log.close()
>>> json.loads(path.read_text())["desired"]
3
>>> exposition = generate_latest(log.registry).decode()
>>> 'freshrec_autoscale_workers{state="desired"} 3.0' in exposition
True
>>> 'freshrec_autoscale_changes_total{direction="up"} 1.0' in exposition
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from freshrec.autoscale.policy import Decision

__all__ = ["DecisionLog"]


class DecisionLog:
    """Appends decisions to `path` (None: no file) and shows the latest on `registry` (default: a new one)."""

    def __init__(self, path: Path | None, registry: CollectorRegistry | None = None) -> None:
        self.path = path
        self.registry = registry if registry is not None else CollectorRegistry()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8") if path is not None else None
        self._workers = Gauge("freshrec_autoscale_workers", "Trainer group size: current, and desired by the "
                              "latest decision", ["state"], registry=self.registry)
        self._value = Gauge("freshrec_autoscale_metric_value", "The latest reading of the autoscale metric "
                            "(NaN: missed)", ["metric"], registry=self.registry)
        self._threshold = Gauge("freshrec_autoscale_threshold", "The autoscale metric's threshold (per worker for "
                                "lag and events_per_s)", ["metric"], registry=self.registry)
        self._changes = Counter("freshrec_autoscale_changes", "Decisions that changed the group size, by direction",
                                ["direction"], registry=self.registry)
        for direction in ("up", "down"):
            self._changes.labels(direction)

    def record(self, decision: Decision) -> None:
        """Write the decision's JSON line and update the figures."""
        if self._file is not None:
            self._file.write(json.dumps(decision.to_json()) + "\n")
            self._file.flush()
        self._workers.labels("current").set(decision.current)
        self._workers.labels("desired").set(decision.desired)
        self._value.labels(decision.metric).set(math.nan if decision.value is None else decision.value)
        self._threshold.labels(decision.metric).set(decision.threshold)
        if decision.changed:
            self._changes.labels(decision.direction).inc()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
