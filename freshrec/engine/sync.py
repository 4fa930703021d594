"""Parameter sync, trainer side: `Publisher` puts a `Delta` into the `ModelRegistry` every
`sync_interval` seconds and a full `Snapshot` every `full_interval` (the first publish is full).

Between publishes it remembers when the events it learned entered the system (for freshness)
and the interactions themselves (for the server's candidates): each delta carries the ones since
the last publish, each full snapshot the most recent `keep_interactions`.

>>> import tempfile
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.snapshot import ModelRegistry
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=256, total_events=768))
>>> specs = default_specs(sim.fields, dim=4)
>>> trainer, pipeline = OnlineTrainer(build_model("fm", specs)), FeaturePipeline(specs)
>>> publisher = Publisher(ModelRegistry(tempfile.mkdtemp()), trainer.model, sim.fields,
...                       SyncConfig(sync_interval=0.0))
>>> kinds = []
>>> for chunk in sim:
...     _ = trainer.learn(pipeline.build(chunk))
...     publisher.observe(chunk)
...     kinds.append(publisher.maybe_publish())
>>> kinds, publisher.registry.full_versions(), publisher.registry.delta_versions()
(['full', 'delta', 'delta'], [1], [2, 3])
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from freshrec.events.event import EventChunk, Field
from freshrec.events.live import conform
from freshrec.models.base import OnlineModel
from freshrec.snapshot import Delta, ModelRegistry, Snapshot, table_versions

__all__ = ["Publisher", "SyncConfig"]


@dataclass(frozen=True)
class SyncConfig:
    """- `sync_interval`: seconds between deltas (the served model's staleness);
    - `full_interval`: seconds between full snapshots (servers bootstrap from the newest);
    - `keep_interactions`: recent interactions a full snapshot carries for the candidates."""

    sync_interval: float = 1.0
    full_interval: float = 300.0
    keep_interactions: int = 100_000

    def __post_init__(self) -> None:
        if self.sync_interval < 0 or self.full_interval < 0 or self.keep_interactions < 0:
            raise ValueError(f"intervals and keep_interactions must be >= 0: {self}")


class Publisher:
    """Publishes `model` (trained by the caller, in the caller's thread) to `registry`."""

    def __init__(self, registry: ModelRegistry, model: OnlineModel, fields: Sequence[Field],
                 config: SyncConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.model = model
        self.fields = tuple(f for f in fields if f.owner in ("user", "item"))
        self.config = config or SyncConfig()
        self.clock = clock
        self.version = registry.latest() or 0
        self.published = {"full": 0, "delta": 0}
        self._table_since: dict[str, int] | None = None
        self._last_delta = self._last_full = -math.inf
        self._new: list[pa.Table] = []
        self._recent: deque[pa.Table] = deque()
        self._recent_rows = 0
        self._entered = (math.inf, -math.inf, 0)
        self.events = 0
        self.meta_source: Callable[[], dict] | None = None  # more JSON for each version (fusion weights)

    def observe(self, chunk: EventChunk) -> None:
        """Note a chunk the model has just learned."""
        if not len(chunk):
            return
        entered = chunk.entered if chunk.entered is not None else time.time()
        low, high, count = self._entered
        self._entered = (min(low, entered), max(high, entered), count + len(chunk))
        self.events += len(chunk)
        table = conform(chunk.table, self.fields)
        self._new.append(table)
        self._recent.append(table)
        self._recent_rows += len(table)
        while self._recent and self._recent_rows - len(self._recent[0]) >= self.config.keep_interactions:
            self._recent_rows -= len(self._recent.popleft())

    def due(self) -> str | None:
        """What `maybe_publish` would publish now: "full", "delta" or None."""
        now = self.clock()
        if self._table_since is None or now - self._last_full >= self.config.full_interval:
            return "full"
        if self._entered[2] and now - self._last_delta >= self.config.sync_interval:
            return "delta"
        return None

    def maybe_publish(self) -> str | None:
        """Publish what is due: "full", "delta" or None."""
        kind = self.due()
        if kind == "full":
            self.publish_full()
        elif kind == "delta":
            self.publish_delta()
        return kind

    def _meta(self) -> dict:
        low, high, count = self._entered
        self._entered = (math.inf, -math.inf, 0)
        self._new = []
        extra = self.meta_source() if self.meta_source is not None else {}
        return {"created_at": time.time(), "events_learned": self.events, "events": count,
                "entered_min": low if count else None, "entered_max": high if count else None, **extra}

    def publish_full(self) -> None:
        """A full snapshot; after the first, of the same version as a delta published just
        before it, so servers following the deltas go on without loading it."""
        if self._table_since is None:
            self.version += 1
        else:
            self.publish_delta()
        meta = {**self._meta(), "fields": [{**asdict(f), "kind": f.kind.value} for f in self.fields]}
        interactions = pa.concat_tables(self._recent) if self._recent else conform(pa.table({}), self.fields)
        self.registry.publish(Snapshot(self.model, self.version, meta, interactions))
        self._table_since = table_versions(self.model)
        self._last_full = self._last_delta = self.clock()
        self.published["full"] += 1

    def publish_delta(self) -> None:
        since, self.version = self.version, self.version + 1
        interactions = pa.concat_tables(self._new) if self._new else None
        delta = Delta.capture(self.model, since, self.version, self._table_since, self._meta(), interactions)
        self.registry.publish(delta)
        self._table_since = {name: d.version for name, d in delta.tables.items()}
        self._last_delta = self.clock()
        self.published["delta"] += 1
