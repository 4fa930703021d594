"""Parameter sync, trainer side: `Publisher` puts a `Delta` into the `ModelRegistry` every
`sync_interval` seconds and a full `Snapshot` every `full_interval` (the first publish is full), or
at once when a server asks for one (`ModelRegistry.want_full`: it refused a version; a worker group
waits for its scheduled one).
A delta carries the rows' weights without their optimizer state (servers score, they do not train:
half the bytes); a full snapshot carries everything.

Between publishes it remembers when the events it learned entered the system (for freshness)
and the interactions themselves (for the server's candidates): each delta carries the ones since
the last publish, each full snapshot the most recent `keep_interactions`.

A publish that fails to write (disk full, read-only or missing directory: any OSError) is never
fatal in `maybe_publish`: it is logged, counted (`failed`, `last_error`, and the Prometheus counter
`freshrec_write_failures{target="registry"}`) and tried again at the first tick after a backoff
(`retry_initial` seconds, doubling up to `retry_max`). Nothing is lost meanwhile: the publisher's
state moves only once a version is written, so the next delta still starts from the last version
written and carries every row changed since, with every interaction learned since. Should a failed
write have landed after all (the rename done, its fsync failed), the registry holds a version the
publisher did not count and the retry is a full snapshot, which servers load whatever they hold.

With `writes` (a `WriteBehind`), a delta is captured in the caller's thread and written behind it,
so the trainer does not wait for the files; a full snapshot is written at once, after the queued
writes. A delta whose write fails breaks the chain: the deltas queued after it are dropped, the
failure is counted at the next `due`/`maybe_publish`, and the next publish (after the backoff) is a
full snapshot, which carries every row and the most recent `keep_interactions` interactions.

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

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from freshrec._durable import WRITE_FAILURES, Backoff, WriteBehind
from freshrec.events.event import EventChunk, Field
from freshrec.events.live import conform
from freshrec.models.base import OnlineModel
from freshrec.snapshot import Delta, ModelRegistry, Snapshot, table_versions

__all__ = ["Publisher", "SyncConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncConfig:
    """- `sync_interval`: seconds between deltas (the served model's staleness);
    - `full_interval`: seconds between full snapshots (servers bootstrap from the newest);
    - `keep_interactions`: recent interactions a full snapshot carries for the candidates;
    - `retry_initial`, `retry_max`: seconds before retrying a failed publish (doubling per failure)."""

    sync_interval: float = 1.0
    full_interval: float = 300.0
    keep_interactions: int = 100_000
    retry_initial: float = 1.0
    retry_max: float = 60.0

    def __post_init__(self) -> None:
        if min(self.sync_interval, self.full_interval, self.keep_interactions, self.retry_initial,
               self.retry_max) < 0:
            raise ValueError(f"intervals, retries and keep_interactions must be >= 0: {self}")


class Publisher:
    """Publishes `model` (trained by the caller, in the caller's thread) to `registry`."""

    def __init__(self, registry: ModelRegistry, model: OnlineModel, fields: Sequence[Field],
                 config: SyncConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 writes: WriteBehind | None = None) -> None:
        self.registry = registry
        self.writes = writes
        self.model = model
        self.fields = tuple(f for f in fields if f.owner in ("user", "item"))
        self.config = config or SyncConfig()
        self.clock = clock
        self.version = registry.latest() or 0
        self.published = {"full": 0, "delta": 0}
        self.failed = {"full": 0, "delta": 0}
        self.last_error: str | None = None
        self._backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        self._table_since: dict[str, int] | None = None
        self._last_delta = self._last_full = -math.inf
        self._new: list[pa.Table] = []
        self._recent: deque[pa.Table] = deque()
        self._recent_rows = 0
        self._entered = (math.inf, -math.inf, 0)
        self.events = 0
        self.meta_source: Callable[[], dict] | None = None  # more JSON for each version (fusion weights)
        self._behind_failures: deque[OSError] = deque()   # filled by the writer's thread
        self._epoch = 0   # moved on by a failed write behind: the deltas queued after it are dropped

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
        """What `maybe_publish` would publish now: "full", "delta" or None (nothing due, or waiting
        to retry a failed write)."""
        self._collect()
        now = self.clock()
        return self._due(now) if self._backoff.ready(now) else None

    def maybe_publish(self) -> str | None:
        """Publish what is due: "full", "delta" or None (nothing due, waiting to retry, or the
        write failed: see `try_publish`)."""
        kind = self.due()
        return kind if kind is not None and self.try_publish(kind) else None

    def _due(self, now: float) -> str | None:
        if self._table_since is None or now - self._last_full >= self.config.full_interval:
            return "full"
        if self.registry.part is None and self.registry.full_wanted():
            return "full"       # a server refused a version: it waits for a full snapshot
        if self._backoff.failures and (self.registry.latest() or 0) > self.version:
            return "full"       # a failed write landed after all: a full snapshot heals the chain
        if self._entered[2] and now - self._last_delta >= self.config.sync_interval:
            return "delta"
        return None

    def try_publish(self, kind: str) -> bool:
        """Publish a "full" snapshot or a "delta" now; False when the write failed, which is logged,
        counted and retried by `maybe_publish` after the backoff (no state is lost)."""
        self._collect()
        try:
            self.publish_full() if kind == "full" else self.publish_delta()
        except OSError as error:
            self._count_failure(kind, error)
            return False
        self._backoff.succeeded()
        return True

    def close(self) -> None:
        """Publish what servers do not have yet (a delta, or a full snapshot where none was written
        or the chain broke) and wait for the writes behind; later publishes write at once."""
        self._collect()
        kind = "full" if self._table_since is None else "delta" if self._entered[2] else None
        if kind is not None:
            self.try_publish(kind)
        if self.writes is not None:
            self.writes.drain()
            self._collect()
            self.writes = None

    def _count_failure(self, kind: str, error: OSError) -> None:
        wait = self._backoff.failed(self.clock())
        self.failed[kind] += 1
        self.last_error = f"{type(error).__name__}: {error}"
        WRITE_FAILURES.labels("registry").inc()
        log.warning("could not publish a %s version to %s (%s); retrying in %.3g s",
                    kind, self.registry.root, self.last_error, wait)

    def _collect(self) -> None:
        """Count the failed writes behind; the next publish is then a full snapshot."""
        while self._behind_failures:
            self._count_failure("delta", self._behind_failures.popleft())
            self._table_since = None

    def _write_behind(self, delta: Delta, epoch: int) -> None:
        """On the writer's thread: write `delta` unless a write before it failed."""
        if epoch != self._epoch:
            return
        try:
            self.registry.publish(delta)
        except OSError as error:
            self._epoch += 1
            self._behind_failures.append(error)

    def _next_version(self) -> int:
        """After the newest of ours and the registry's (whichever a failed write left behind)."""
        return max(self.version, self.registry.latest() or 0) + 1

    def _meta(self) -> dict:
        low, high, count = self._entered
        extra = self.meta_source() if self.meta_source is not None else {}
        return {"created_at": time.time(), "events_learned": self.events, "events": count,
                "entered_min": low if count else None, "entered_max": high if count else None, **extra}

    def _written(self, version: int) -> None:
        """A version is in the registry: what it carries is no longer pending."""
        self.version = version
        self._entered = (math.inf, -math.inf, 0)
        self._new = []

    def publish_full(self) -> None:
        """A full snapshot; after the first, of the same version as a delta published just
        before it, so servers following the deltas go on without loading it. OSError when the
        registry cannot be written (nothing is lost: a later publish carries it all)."""
        if self._table_since is not None:
            self.publish_delta()
        if self.writes is not None:
            self.writes.drain()
            self._collect()
        version = self.version if self._table_since is not None else self._next_version()
        meta = {**self._meta(), "fields": [{**asdict(f), "kind": f.kind.value} for f in self.fields]}
        interactions = pa.concat_tables(self._recent) if self._recent else conform(pa.table({}), self.fields)
        tables = table_versions(self.model)
        self.registry.publish(Snapshot(self.model, version, meta, interactions))
        self.registry.full_given()
        self._written(version)
        self._table_since = tables
        self._last_full = self._last_delta = self.clock()
        self.published["full"] += 1

    def publish_delta(self) -> None:
        """A delta from the last version written; OSError when the registry cannot be written."""
        version = self._next_version()
        interactions = pa.concat_tables(self._new) if self._new else None
        delta = Delta.capture(self.model, self.version, version, self._table_since, self._meta(), interactions,
                              optimizer_state=False)   # servers score, they do not train
        if self.writes is None:
            self.registry.publish(delta)
        else:
            self.writes.submit(lambda epoch=self._epoch: self._write_behind(delta, epoch))
        self._written(version)
        self._table_since = {name: d.version for name, d in delta.tables.items()}
        self._last_delta = self.clock()
        self.published["delta"] += 1
