"""`ModelService`: the serving side of parameter sync, and what the HTTP endpoints call.

It bootstraps from the registry's newest full snapshot (or the pinned one), then follows the
registry: each new delta is applied to a standby replica, which `ModelSwitcher.swap` makes the
serving one; once the requests still on the old replica have finished, the same delta brings it
up to date and it becomes the standby (two replicas: a request never sees a model half-updated).
A gap in the chain (a missing or refused delta) makes it load the next full snapshot; a torn or
altered version is refused, counted, and the current model keeps serving. Until a full snapshot
newer than the gap comes, the service is `behind` (/healthz says "degraded") and it asks the
trainer for one at once (`ModelRegistry.want_full`) rather than waiting for the next scheduled one.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.snapshot import ModelRegistry, Snapshot
>>> registry = ModelRegistry(tempfile.mkdtemp())
>>> model = build_model("lr", [FeatureSpec("user_id", FieldKind.CATEGORICAL),
...                            FeatureSpec("item_id", FieldKind.CATEGORICAL)])
>>> _ = registry.publish(Snapshot(model, version=1))
>>> service = ModelService(registry)
>>> service.sync(), service.version
(1, 1)
>>> service.predict("u1", {}, [("i1", {}), ("i2", {})])
(1, [0.5, 0.5])
>>> service.score("u1", {}, [("i1", {}), (2, {})])       # with the cold starts: no row learned for any
Scored(version=1, items=['i1', 2], scores=[0.5, 0.5], cold_user=True, cold_items=['i1', 2], arm=None)

An arm of a live experiment (`freshrec.serve.arms`) is a service that follows the registry its own
way: `follow="full"` takes full snapshots only (a daily model), `follow="frozen"` holds the version it
starts with (or `hold`).
"""

from __future__ import annotations

import gc
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from freshrec.events.event import ITEM, USER, Event
from freshrec.events.live import LiveQueue, check_value
from freshrec.features.content import ItemContent, content_block
from freshrec.metrics.prometheus import ServingMetrics
from freshrec.serve.candidates import CandidateConfig, CandidateIndex
from freshrec.serve.replica import Replica
from freshrec.snapshot import (
    CorruptVersion,
    Delta,
    ModelRegistry,
    ModelSwitcher,
    Snapshot,
)

__all__ = ["ModelService", "Scored", "canonical_id"]

_NO_FIELDS: dict = {}

log = logging.getLogger(__name__)
_INT64 = (-(1 << 63), (1 << 63) - 1)


def canonical_id(live: str) -> str | int:
    """An id's live form (a string: 42 and "42" are one id) as an answer gives it: an integer where
    it is one's decimal form, as data sets with integer ids gave it, else the string.

    >>> canonical_id("42"), canonical_id("042"), canonical_id("i42")
    (42, '042', 'i42')
    """
    if live.lstrip("-").isdecimal() and live.isascii():
        number = int(live)
        if str(number) == live and _INT64[0] <= number <= _INT64[1]:
            return number
    return live


@dataclass(frozen=True)
class Scored:
    """Items scored for a user by the model `version`; `cold_user`: the model has no learned row
    for the user, `cold_items`: the items it has none for (cold starts: scored from their other
    features alone); `arm`: the experiment's arm that scored them."""

    version: int
    items: list[str | int]
    scores: list[float]
    cold_user: bool
    cold_items: list[str | int]
    arm: str | None = None   # the experiment's arm that answered (None: no experiment)


class ModelService:
    """Serves the registry's model: sync, predict, recommend, and the live event sink."""

    pinnable = True   # /admin/swap and /admin/rollback pin the registry's versions

    def __init__(self, registry: ModelRegistry | None, metrics: ServingMetrics | None = None,
                 sink: LiveQueue | None = None, candidates: CandidateConfig | None = None,
                 drain_timeout: float = 10.0, offline: ModelRegistry | None = None,
                 follow: str = "latest", hold: int | None = None, content: ItemContent | None = None,
                 interactions: bool = True) -> None:
        """`offline`: the registry of offline snapshots; when the online versions carry Hedge weights
        (`fusion` meta), scores are `w * online + (1 - w) * offline`. `follow`: latest (every
        version), full (full snapshots only) or frozen (the first version loaded, or the full
        snapshot `hold`, and no other). `content`: the items' content vectors, for models with content
        features (a version that has them is refused without it). `interactions`: whether the
        versions' interactions feed `candidates` (not for a two-tower's service under a `Retriever`,
        which reads the ranking service's index)."""
        if follow not in ("latest", "full", "frozen") or (hold is not None and follow != "frozen"):
            raise ValueError(f"follow must be latest, full or frozen (hold: frozen only), got {follow!r}, {hold}")
        self.registry = registry
        self.content = content
        self.follows, self.hold = follow, hold
        self.offline = offline
        self.offline_switcher: ModelSwitcher[Replica] = ModelSwitcher()
        self.metrics = metrics or ServingMetrics()
        self.sink = sink
        self.candidate_config = candidates or CandidateConfig()
        self.drain_timeout = drain_timeout
        self.switcher: ModelSwitcher[Replica] = ModelSwitcher()
        self.candidates = CandidateIndex(self.candidate_config)
        self.interactions = interactions
        self._standby: Replica | None = None
        self._refused: set[int] = set()
        self._refused_offline: set[int] = set()
        self._sync_lock = threading.Lock()
        self._fresh: tuple[int, float] | None = None
        self.freshness: deque[float] = deque(maxlen=10_000)
        self.events_learned = 0
        self.sync_cpu_seconds = 0.0   # CPU time the follower thread spent following the registry
        self.behind: str | None = None   # why the served version cannot follow the registry (None: it does)
        self._asked: int | None = None   # the newest version a full snapshot was asked for after
        self._frozen_at: int | None = None
        self.retriever = None   # a `Retriever`: /recommend's learned candidates beside the candidate index

    @property
    def version(self) -> int | None:
        current = self.switcher.current
        return current.version if current else None

    # ------------------------------------------------------------------ sync
    def sync(self) -> int | None:
        """Catch up with the registry once; returns the served version (None before any)."""
        with self._sync_lock:
            self._sync_offline()
            pinned = self.hold if self.hold is not None else self.registry.pinned()
            if pinned is not None:
                if self.version != pinned:
                    self._load_full(pinned)
                return self.version
            if self.version is None:
                if (newest := self._newest_full()) is None:
                    return None
                self._load_full(newest)
                if self.version is None:   # refused
                    self._check_behind(None)
                    return None
            if self.follows == "frozen":
                return self.version
            gap = None
            for version in self.registry.deltas_after(self.version) if self.follows == "latest" else ():
                if version in self._refused or version <= self.version:  # passed by a full load
                    continue
                delta = self._read(version, self.registry.load_delta)
                if delta is None:
                    continue
                if delta.since != self.version:  # a gap: jump to the newest full snapshot
                    newest = self._newest_full()
                    if newest is None or newest <= self.version:
                        gap = version
                        break
                    self._load_full(newest)
                    if delta.since != self.version:
                        continue
                self._advance(delta)
            newest = self._newest_full()
            if newest is not None and newest > self.version:  # full snapshots with no delta chain
                self._load_full(newest)
            self._check_behind(gap)
            return self.version

    def _check_behind(self, gap: int | None) -> None:
        """Set `behind` while a refused version or a gap in the deltas (`gap`: the delta that does
        not follow) lies past the served version, and ask the trainer for a full snapshot once."""
        served = self.version if self.version is not None else 0
        refused = max((v for v in self._refused if v > served), default=None)
        stuck = max((v for v in (refused, gap) if v is not None), default=None)
        was = self.behind
        serving = f"serving version {self.version}" if self.version is not None else "serving no version"
        self.behind = None if stuck is None else (
            f"{serving}: version {refused} was refused" if stuck == refused else
            f"{serving}: delta {gap} does not follow it") + "; waiting for a full snapshot"
        self.metrics.behind.set(self.behind is not None)
        if stuck is not None and self._asked != stuck:
            self._asked = stuck
            try:
                self.registry.want_full(served, self.behind)
            except OSError as error:   # a registry this server may not write: the scheduled full comes
                log.warning("could not ask for a full snapshot: %s", error)
        if self.behind != was:
            (log.warning if self.behind else log.info)(self.behind or f"caught up: serving version {self.version}")

    def _sync_offline(self) -> None:
        """Serve the newest offline snapshot beside the online model."""
        newest = self.offline.latest_full() if self.offline is not None else None
        current = self.offline_switcher.current
        if newest is None or (current is not None and current.version == newest):
            return
        snapshot = self._read(newest, lambda v: self._servable(self.offline.load_full(v)), self._refused_offline,
                              "offline ")
        if snapshot is not None:
            self.offline_switcher.swap(Replica.from_snapshot(snapshot, self.content))

    def _newest_full(self) -> int | None:
        versions = [v for v in self.registry.full_versions() if v not in self._refused]
        return versions[-1] if versions else None

    def _read(self, version: int, load, refused: set[int] | None = None, what: str = ""):
        """`load(version)`, or None: a version that fails is added to `refused` (default: the online
        ones), counted and logged once, and never read again."""
        refused = self._refused if refused is None else refused
        if version in refused:
            return None
        try:
            return load(version)
        except FileNotFoundError:  # pruned or being replaced: the next poll sees the new state
            return None
        except (CorruptVersion, ValueError, KeyError, OSError) as error:
            refused.add(version)
            self.metrics.sync_errors.labels(f"{what}{type(error).__name__}").inc()
            log.error("refused %sversion %d: %s", what, version, error)
            return None

    def _servable(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot`, or ValueError (the version is refused) when its model reads item content this server
        lacks."""
        content_block(snapshot.model.specs, self.content, f"version {snapshot.version}")
        return snapshot

    def _load_full(self, version: int) -> None:
        """Serve the full snapshot `version` (two replicas of it: serving and standby)."""
        snapshot: Snapshot | None = self._read(version, lambda v: self._servable(self.registry.load_full(v)))
        if snapshot is None:
            return
        standby = Replica.from_snapshot(self.registry.load_full(version, verify=False), self.content)
        fields = snapshot.meta.get("fields", [])
        candidates = CandidateIndex(self.candidate_config, [f["name"] for f in fields if f["owner"] == "item"])
        if snapshot.interactions is not None and self.interactions:
            candidates.observe(snapshot.interactions)
        self.candidates = candidates
        self._standby = standby
        self._swap(Replica.from_snapshot(snapshot, self.content), "full", snapshot.meta)
        # the old pair is dropped here; its memory goes once its last request finishes

    def _advance(self, delta: Delta) -> None:
        standby = self._standby
        if standby is None or standby.version != delta.since:
            standby = Replica.from_snapshot(self._rebuild(delta.since), self.content)
        standby.advance(delta)
        old = self._swap(standby, "delta", delta.meta)
        if delta.interactions is not None and self.interactions:
            self.candidates.observe(delta.interactions)
        self._standby = None
        if old is not None and self.switcher.drained(old, self.drain_timeout):
            old.advance(delta)
            self._standby = old

    def _rebuild(self, version: int) -> Snapshot:
        """A snapshot at `version`: the newest full one at or before it plus the deltas between."""
        base = max(v for v in self.registry.full_versions() if v <= version)
        snapshot = self.registry.load_full(base)
        for v in self.registry.deltas_after(base):
            if v > version:
                break
            self.registry.load_delta(v).apply(snapshot.model)
        snapshot.version = version
        return snapshot

    def _swap(self, replica: Replica, kind: str, meta: dict) -> Replica | None:
        old = self.switcher.swap(replica)
        m = self.metrics
        m.swaps.labels(kind).inc()
        m.model_version.set(replica.version)
        m.fusion_weight.set(float(replica.fusion["w_online"]) if replica.fusion else 1.0)
        m.sync_lag.observe(max(0.0, time.time() - replica.created_at))
        self.events_learned = int(meta.get("events_learned", self.events_learned))
        if meta.get("entered_min") is not None:
            self._fresh = (replica.version, float(meta["entered_min"]))
        return old

    def follow(self, stop: threading.Event, poll_interval: float = 0.05) -> None:
        """Sync every `poll_interval` seconds until `stop` is set (the server's sync thread).

        After each new version the objects alive (the models, the candidate index: millions of
        small ones) are moved out of the garbage collector's reach (`gc.freeze`), so a full
        collection does not stall requests for a scan of all of them (a 150-190 ms pause measured
        in bench/serve.py without it); objects freed later are still freed by reference counting.
        A collection first frees the cycles that requests left (uvicorn's and asyncio's: about one
        object a request): frozen, they would stay for good. It scans only what came since the
        last freeze."""
        while not stop.is_set():
            self.sync_safely()
            stop.wait(poll_interval)

    def sync_safely(self) -> None:
        """One `sync`, its error logged and counted: the current version goes on serving whatever a
        new one holds."""
        try:
            started = time.thread_time()
            version = self.sync()
            self.sync_cpu_seconds += time.thread_time() - started
            if version != self._frozen_at:
                self._frozen_at = self.version
                gc.collect()
                gc.freeze()
        except Exception:
            self.metrics.sync_errors.labels("unexpected").inc()
            log.exception("sync failed")

    # ------------------------------------------------------------------ requests
    def _served(self, replica: Replica) -> None:
        """Record freshness the first time a version that learned new events serves a request."""
        fresh = self._fresh
        if fresh is not None and replica.version >= fresh[0]:
            self._fresh = None
            seconds = time.time() - fresh[1]
            self.freshness.append(seconds)
            self.metrics.freshness.observe(seconds)

    def score(self, user: str | int, context: dict, items: Sequence[tuple[str | int, dict]],
              arm: str | None = None) -> Scored:
        """The candidate `items` (each with its own fields) scored for `user`, as given.

        A column's value comes from, in order: the candidate's own fields, the request context,
        the item's latest fields (item columns), the user's latest fields (user columns)."""
        with self.switcher.lease() as replica:
            context, own = self._checked(replica, context, {item: fields for item, fields in items if fields})
            return self._score(replica, user, context, own, [item for item, _ in items], arm)

    def predict(self, user: str | int, context: dict,
                items: Sequence[tuple[str | int, dict]]) -> tuple[int, list[float]]:
        """(version, scores) of `score`."""
        scored = self.score(user, context, items)
        return scored.version, scored.scores

    def _score(self, replica: Replica, user: str | int, context: dict, own: dict, items: list[str | int],
               arm: str | None) -> Scored:
        known_items = self.candidates.item_fields
        known_user = self.candidates.user_fields.get(str(user), {})
        item_columns = self.candidates.item_columns - context.keys() | {c for f in own.values() for c in f}
        n = len(items)   # each item's fields, looked up once (map: no bytecode per item, 100s of items a request)
        known = list(map(known_items.get, map(str, items), repeat(_NO_FIELDS, n)))

        def shared(column: str) -> object:
            return context[column] if column in context else known_user.get(column)

        def per_item(column: str) -> list:
            if column in context:
                values = [context[column]] * n
            else:
                values = list(map(dict.get, known, repeat(column, n)))
            for at, item in enumerate(items) if own else ():
                fields = own.get(item)
                if fields is not None and column in fields:
                    values[at] = fields[column]
            return values

        rows = replica.rows(user, items, shared, per_item, item_columns)
        online, cold = replica.score_with_cold(rows)
        scores = self._blend(replica, rows, online)
        if not np.isfinite(scores).all():
            raise ValueError("the model's scores of these values are not finite: a dense value too large?")
        self._served(replica)
        cold_items = cold.get(ITEM)
        cold_user = bool(cold[USER][0]) if USER in cold and n else False   # (no rows: /recommend had no candidates)
        return Scored(replica.version, items, scores.tolist(), cold_user,
                      [] if cold_items is None else [item for item, new in zip(items, cold_items.tolist()) if new], arm)

    def _blend(self, replica: Replica, rows, online):
        """Online scores, blended with the offline model's by the version's Hedge weights."""
        fusion = replica.fusion
        if not fusion or self.offline_switcher.current is None:
            return online
        with self.offline_switcher.lease() as offline:
            if offline.version != fusion.get("offline_version"):
                return online   # weights learned for another offline model: the online scores alone
            weight = float(fusion["w_online"])
            return weight * online + (1.0 - weight) * offline.score(rows)

    def recommend(self, user: str | int, context: dict, k: int, candidates: int = 200,
                  arm: str | None = None) -> Scored:
        """The top `k` for `user` (ids as `canonical_id` gives them) of `candidates` items: with a retriever, half
        its nearest items, the rest from the candidate index (co-occurrence, popularity); else all from the index."""
        items = [canonical_id(item) for item in self.candidates.candidates(str(user), candidates)]
        if self.retriever is not None:
            retrieved = self.retriever.candidates(user, (candidates + 1) // 2)
            items = list(dict.fromkeys(retrieved + items))[:candidates]
        scored = self.score(user, context, [(item, {}) for item in items], arm)
        ranked = sorted(zip(scored.scores, items), key=lambda pair: -pair[0])[:k]
        top, cold = [item for _, item in ranked], set(scored.cold_items)
        return Scored(scored.version, top, [score for score, _ in ranked], scored.cold_user,
                      [item for item in top if item in cold], arm)

    @staticmethod
    def _checked(replica: Replica, context: dict, own: dict) -> tuple[dict, dict]:
        """The request's context and per-candidate fields in their live form; ValueError names an
        unknown field or a value of the wrong type."""
        columns = replica.columns

        def check(fields: dict) -> dict:
            for name in fields:
                if name not in columns:
                    raise ValueError(f"unknown field {name!r}; the model reads: {', '.join(sorted(columns))}")
            return {name: check_value(value, columns[name], name) for name, value in fields.items()}
        return check(context), {item: check(fields) for item, fields in own.items()}

    def new_ids(self, users: Sequence[str | int], items: Sequence[str | int]) -> int:
        """How many distinct ids of `users` and of `items` the served model has no row for (all of
        them before a model is loaded)."""
        distinct = {USER: list({str(u) for u in users}), ITEM: list({str(i) for i in items})}
        if self.switcher.current is None:
            return sum(map(len, distinct.values()))
        with self.switcher.lease() as replica:
            return sum(int(replica.unknown(column, ids).sum()) for column, ids in distinct.items())

    def accept(self, events: Sequence[Event]) -> int:
        """Hand events to the live source (ValueError for a bad event, QueueFull when full; with a
        journal, durable when this returns, `JournalError` when they could not be made so)."""
        if self.sink is None:
            raise LookupError("this server has no event sink: run `freshrec replay ... --serve` to train "
                              "and serve in one process")
        accepted = self.sink.put(events)
        self.metrics.events.inc(accepted)
        return accepted

    def describe(self) -> dict:
        """What GET /model answers."""
        current = self.switcher.current
        fresh = sorted(self.freshness)
        out = {"version": None} if current is None else {
            "version": current.version, "created_at": current.created_at,
            "age_s": time.time() - current.created_at, "model": type(current.model).__name__,
            "train_position": {"events_learned": self.events_learned}}
        out["swaps"] = self.switcher.swaps
        if self.retriever is not None:
            out["retrieval"] = self.retriever.describe()
        if fresh:
            out["freshness_s"] = {"n": len(fresh), "p50": statistics.median(fresh),
                                  "p99": fresh[min(len(fresh) - 1, int(0.99 * len(fresh)))]}
        return out
