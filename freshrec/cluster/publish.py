"""`GroupPublisher`: one rank's `Publisher` in a worker group. Every rank publishes its part of the
same versions after the same chunk; a server serves a version once every part of it is there.

After each chunk the ranks vote in one small all-reduce (the maximum of four numbers each): what
the rank would publish now (nothing, a delta or a full snapshot, by its own clock: `SyncConfig`),
whether its chain of deltas is broken (a write of its failed: it needs a full snapshot), whether
it is waiting to retry a failed write, and the version after its last. The group publishes the
most any rank wants, a full snapshot without a delta before it where any rank needs one, at the
highest version proposed; nothing while a rank waits. Each rank writes its part
(`ModelRegistry(part=(rank, world))`): its shard of every table, the dense weights (equal on every
rank) and the events it learned; the registry lists the version once all parts are there and
assembles the whole model's snapshot or delta from them (`Snapshot.assemble`, `Delta.assemble`).
A part that fails to write leaves its version incomplete, never served; the group's next version is
a full snapshot, which servers load whatever they hold.

>>> import tempfile
>>> from freshrec.cluster.group import Group
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.snapshot import ModelRegistry
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=256, total_events=768))
>>> specs = default_specs(sim.fields, dim=4)
>>> trainer, pipeline = OnlineTrainer(build_model("fm", specs)), FeaturePipeline(specs)
>>> root = tempfile.mkdtemp()
>>> publisher = GroupPublisher(ModelRegistry(root, part=(0, 1)), trainer.model, sim.fields, Group.alone(),
...                            SyncConfig(sync_interval=0.0))
>>> for chunk in sim:
...     _ = trainer.learn(pipeline.build(chunk))
...     publisher.observe(chunk)
...     _ = publisher.maybe_publish()
>>> registry = ModelRegistry(root)                    # what a server sees: whole versions
>>> registry.full_versions(), registry.delta_versions(), sorted(p.name for p in (registry.root / "parts").iterdir())
([1], [2, 3], ['delta', 'full'])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from freshrec._durable import WriteBehind
from freshrec.cluster.group import Group
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.event import Field
from freshrec.models.base import OnlineModel
from freshrec.snapshot import ModelRegistry

__all__ = ["GroupPublisher"]

_KINDS = (None, "delta", "full")


class GroupPublisher(Publisher):
    """Publishes rank `group.rank`'s part of `model` to `registry` (a handle with `part`); its
    `maybe_publish` and `close` are collectives: every rank calls them after the same chunk."""

    def __init__(self, registry: ModelRegistry, model: OnlineModel, fields: Sequence[Field], group: Group,
                 config: SyncConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 writes: WriteBehind | None = None) -> None:
        if registry.part != (group.rank, group.world):
            raise ValueError(f"rank {group.rank} of {group.world} publishes with a registry handle for its part, "
                             f"not {registry.part}")
        super().__init__(registry, model, fields, config, clock, writes)
        self.group = group
        self.version = registry.latest(partial=True) or 0   # after any version a group before this one began
        self._agreed: int | None = None

    def maybe_publish(self) -> str | None:
        """Vote with the other ranks and publish what the group agreed: "full", "delta" or None."""
        self._collect()
        now = self.clock()
        return self._publish_agreed(self._due(now), waiting=not self._backoff.ready(now))

    def close(self) -> None:
        """Publish what servers do not have yet (with every rank), then wait for the writes behind."""
        self._collect()
        wish = "full" if self._table_since is None else "delta" if self._entered[2] else None
        self._publish_agreed(wish, waiting=False)
        if self.writes is not None:
            self.writes.drain()
            self._collect()
            self.writes = None

    def _publish_agreed(self, wish: str | None, waiting: bool) -> str | None:
        broken = self._table_since is None or self._backoff.failures > 0
        newest = max(self.version, self.registry.latest(partial=True) or 0) if broken else self.version
        vote = self.group.max_(torch.tensor([_KINDS.index(wish), broken, waiting, newest + 1], dtype=torch.int64))
        kind, any_broken, any_waiting, version = (int(x) for x in vote)
        if any_waiting or not kind:
            return None
        if any_broken:
            kind, self._table_since = 2, None   # one full snapshot at `version`, no delta before it
        self._agreed = version
        try:
            return _KINDS[kind] if self.try_publish(_KINDS[kind]) else None
        finally:
            self._agreed = None

    def _next_version(self) -> int:
        return self._agreed if self._agreed is not None else super()._next_version()
