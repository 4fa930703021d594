"""`AttachedService`: a server that scores from a trainer's shared tables (`freshrec serve --attach
NAME`) instead of following a registry's deltas.

The rows are the trainer's own, mapped read-only: a row the trainer has just stepped is served at
the next request, with no copy. The dense weights (a few kilobytes to megabytes) come from the
trainer's dense block: two replicas share the tables and each has its own dense weights; at each
poll (`ServeConfig.poll_interval`: `freshrec serve --attach` polls every 5 ms) a new block version
is copied into the standby replica, which then serves, while the requests on the other one finish
(as `ModelService` does with deltas). When a trainer takes the share over (a new generation), both
replicas are rebuilt on the new generation's tables. With a `registry` beside the share, the candidates of /recommend
follow the interactions of its snapshots and deltas (their models are not loaded), looked for
every `INTERACTIONS_INTERVAL` seconds.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.share import SharedArea, ShareWriter
>>> root = tempfile.mkdtemp()
>>> model = build_model("fm", [FeatureSpec("user_id", FieldKind.CATEGORICAL),
...                            FeatureSpec("item_id", FieldKind.CATEGORICAL)])
>>> writer = ShareWriter(SharedArea("service-demo", root=root), model)
>>> service = AttachedService(SharedArea("service-demo", root=root))
>>> service.sync() == writer.version
True
>>> service.predict("u1", {}, [("i1", {})])[1]
[0.5]
"""

from __future__ import annotations

import math
import time

from freshrec.events.live import LiveQueue
from freshrec.features.content import ItemContent
from freshrec.metrics.prometheus import ServingMetrics
from freshrec.serve.candidates import CandidateConfig, CandidateIndex
from freshrec.serve.replica import Replica
from freshrec.serve.service import ModelService
from freshrec.share import Attachment, SharedArea
from freshrec.snapshot import ModelRegistry

__all__ = ["AttachedService"]

INTERACTIONS_INTERVAL = 0.25   # seconds between looks at the registry for the candidates' interactions


class AttachedService(ModelService):
    """Serves share `area`'s model; `registry` (optional): where the candidates' interactions come from."""

    pinnable = False   # the trainer's live tables: no version to pin or roll back to

    def __init__(self, area: SharedArea, registry: ModelRegistry | None = None,
                 metrics: ServingMetrics | None = None, sink: LiveQueue | None = None,
                 candidates: CandidateConfig | None = None, drain_timeout: float = 10.0,
                 content: ItemContent | None = None) -> None:
        super().__init__(registry, metrics, sink, candidates, drain_timeout, content=content)
        self.attachment = Attachment(area)
        self._generation: int | None = None         # the share's generation served
        self._interactions_at: int | None = None   # the registry version the candidates have seen
        self._next_interactions = -math.inf

    def sync(self) -> int | None:
        """Follow the share once (and the registry's interactions); returns the served version."""
        with self._sync_lock:
            self.attachment.refresh()
            if self.attachment.generation != self._generation:   # new, or its dense block was unreadable
                self._start_generation()
            elif self._standby is not None and self.attachment.latest_version() != self.version:
                self._advance_dense()
            now = time.monotonic()
            if self.registry is not None and now >= self._next_interactions:
                self._next_interactions = now + INTERACTIONS_INTERVAL
                self._follow_interactions()
            return self.version

    def _replica(self) -> tuple[Replica, dict] | None:
        """A new replica of the current generation with the dense block's weights, and its meta."""
        model = self.attachment.model()
        header = self.attachment.read_dense(model)
        if header is None:
            return None
        meta = {"events_learned": header.events, "entered_min": header.entered}
        return Replica.from_snapshot_parts(model, header.version, header.written, content=self.content), meta

    def _start_generation(self) -> None:
        serving, standby = self._replica(), self._replica()
        if serving is None or standby is None:
            return
        self._generation, self._standby = self.attachment.generation, standby[0]
        self._swap(serving[0], "shared", serving[1])

    def _advance_dense(self) -> None:
        standby = self._standby
        header = self.attachment.read_dense(standby.model)
        if header is None or header.version == self.version:
            return
        standby.version, standby.created_at = header.version, header.written
        old = self._swap(standby, "shared", {"events_learned": header.events, "entered_min": header.entered})
        self._standby = old if old is not None and self.switcher.drained(old, self.drain_timeout) else None
        if self._standby is None:   # a request held the old one past the drain timeout: a fresh standby
            fresh = self._replica()
            self._standby = fresh[0] if fresh is not None else None

    def describe(self) -> dict:
        """What GET /model answers, with the share's name and the generation served."""
        return {**super().describe(), "share": {"name": self.attachment.area.name,
                                                "generation": self.attachment.generation}}

    def _follow_interactions(self) -> None:
        """Feed the candidates the interactions of the registry's versions not seen yet: the newest
        full snapshot's first, then each delta's (one pruned before it was read is skipped: the
        candidates are approximate)."""
        registry = self.registry
        if self._interactions_at is None:
            newest = self._newest_full()
            if newest is None:
                return
            found = self._read(newest, lambda v: registry.interactions("full", v))
            if found is None:
                return
            meta, interactions = found
            fields = meta.get("fields", [])
            self.candidates = CandidateIndex(self.candidate_config,
                                             [f["name"] for f in fields if f["owner"] == "item"])
            if interactions is not None:
                self.candidates.observe(interactions)
            self._interactions_at = newest
        for version in registry.deltas_after(self._interactions_at):
            found = self._read(version, lambda v: registry.interactions("delta", v))
            if found is not None and found[1] is not None:
                self.candidates.observe(found[1])
            self._interactions_at = version
