"""`Retriever`: `/recommend`'s learned candidate source, an online two-tower model and an ANN index of its
item vectors.

The model is followed from its own registry exactly as the ranking model is from its one (a `ModelService`:
deltas in version order, full snapshots, hot swap with leases). Each time the served version changes,
`refresh` recomputes the vector of every known item (the items interacted with, from the ranking service's
`CandidateIndex`, and the items with content: a new item is retrievable before its first interaction) and
publishes them as the next version of the `ItemIndex` (copy-on-write: requests search the previous version
meanwhile), at most every `reindex_interval` seconds (`serve.retrieval_reindex`): 100k items cost the server
tens of milliseconds of CPU each time; items first seen between two re-indexes are added at the next refresh, with
the version served then. A request's query is
the user tower's vector of the user's latest fields and recent items; items the user already had are left out.

>>> import tempfile
>>> from freshrec.events.event import Field, FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models.two_tower import TwoTower, TwoTowerConfig
>>> import pyarrow as pa
>>> from freshrec.serve.service import ModelService
>>> from freshrec.snapshot import ModelRegistry, Snapshot
>>> model = TwoTower([FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)],
...                  TwoTowerConfig(dim=4, out_dim=4, history_field=""))
>>> registry = ModelRegistry(tempfile.mkdtemp())
>>> _ = registry.publish(Snapshot(model, version=1))
>>> ranking = ModelService(None)          # the ranking model's service: its CandidateIndex knows the interactions
>>> ranking.candidates.observe(pa.table({"ts": [1.0, 2.0], "user_id": ["u", "u"], "item_id": ["7", "8"],
...                                      "label": [1.0, 1.0]}))
>>> retriever = Retriever(ModelService(registry, interactions=False), ranking)   # with content: both services given it
>>> retriever.sync()
1
>>> sorted(retriever.candidates("v", 5)), retriever.candidates("u", 5)   # u had both
([7, 8], [])
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Hashable

import numpy as np
import pyarrow as pa
import torch

from freshrec.events.event import ITEM, USER
from freshrec.features.content import ItemContent
from freshrec.features.request import RequestRows
from freshrec.models.two_tower import TwoTower
from freshrec.serve.ann import IndexConfig, ItemIndex
from freshrec.serve.candidates import CandidateIndex
from freshrec.serve.replica import Replica
from freshrec.serve.service import ModelService, canonical_id

__all__ = ["Retriever"]
log = logging.getLogger(__name__)

CHUNK = 4096
"""Items whose vectors one forward of the item tower computes (the refresh yields to requests between them)."""


class Retriever:
    """Candidates from the two-tower of `models` (a `ModelService` following the retrieval registry) over the
    items of `ranking`'s `CandidateIndex` (the ranking model's service: interactions, users' fields and
    histories) and of `content` (their content vectors, the item tower's dense input)."""

    def __init__(self, models: ModelService, ranking: ModelService, content: ItemContent | None = None,
                 index: IndexConfig | None = None) -> None:
        self.models, self.ranking, self.content = models, ranking, content
        self.index_config = index or IndexConfig()
        self.index: ItemIndex | None = None
        self.indexed_version: int | None = None
        self._keys: dict[str, int] = {}        # item (live form) -> its hashed id, the index's key
        self._items: dict[int, str] = {}       # and back
        self._key_array = np.zeros(0, np.int64)        # the keys in order of arrival (the index's items)
        self._content = np.zeros((0, content.dim if content is not None else 0), np.float32)   # their content
        self._taken: tuple[CandidateIndex | None, int] = (None, 0)  # a candidate index, how many of its items taken
        self._refresh = threading.Lock()
        self._reindexed = -math.inf   # when the index was last rebuilt from every item (time.monotonic)

    def sync(self, reindex_interval: float = 0.0) -> int | None:
        """Follow the registry once and refresh the index (`refresh`); returns the indexed model version."""
        self.models.sync()
        return self.refresh(reindex_interval)

    def follow(self, stop: threading.Event, poll_interval: float = 0.05, reindex_interval: float = 0.0) -> None:
        """`sync` every `poll_interval` seconds until `stop` is set (the retriever's sync thread)."""
        while not stop.is_set():
            try:
                self.sync(reindex_interval)
            except Exception:  # keep retrieving from the index as it is whatever a version holds
                log.exception("retrieval sync failed")
            stop.wait(poll_interval)

    @property
    def seen(self) -> CandidateIndex:
        """The ranking service's current candidate index (replaced with each full snapshot it loads)."""
        return self.ranking.candidates

    def refresh(self, reindex_interval: float = 0.0) -> int | None:
        """Index every known item's vector anew when the model's version changed and the last re-index is at least
        `reindex_interval` seconds old; otherwise add only the items new since the last refresh (with the served
        version). Returns the model version of the last re-index (None before a model). Only the items new to it
        cost Python; the others are arrays."""
        with self._refresh, self.models.switcher.lease() as replica:
            if replica is None:
                return None
            added = self._add(replica, self._new_items())
            now = time.monotonic()
            if replica.version != self.indexed_version and now - self._reindexed >= reindex_interval:
                self._index(replica, np.arange(len(self._key_array)), replace=True)
                self.indexed_version, self._reindexed = replica.version, now
            elif added:
                self._index(replica, np.arange(len(self._key_array) - added, len(self._key_array)), replace=False)
            return self.indexed_version

    def _new_items(self) -> list[str]:
        """The items (live form) the candidate index and the content list have that this retriever lacks."""
        seen = self.seen
        start = self._taken[1] if self._taken[0] is seen else 0   # a new index (a full snapshot): all again
        fresh = seen.items(start)
        self._taken = (seen, start + len(fresh))
        if not self._keys and self.content is not None:
            fresh = self.content.ids.to_pylist() + fresh
        return [item for item in dict.fromkeys(map(str, fresh)) if item not in self._keys]

    def _add(self, replica: Replica, items: list[str]) -> int:
        """Hash and append `items` (with their content rows); returns how many."""
        if not items:
            return 0
        _, keys = replica.featurizer.ids(ITEM, items)
        for item, key in zip(items, keys.tolist()):
            self._keys[item] = key
            self._items[key] = item
        self._key_array = np.concatenate([self._key_array, keys.astype(np.int64)])
        if self.content is not None:
            self._content = np.concatenate([self._content, self.content.vectors(pa.array(items))])
        return len(items)

    def describe(self) -> dict:
        """What GET /model says of retrieval: the indexed model version, the index's version and items."""
        index = self.index
        return {"version": self.indexed_version, "index_version": index.version if index else None,
                "items": len(index) if index else 0}

    def candidates(self, user: Hashable, n: int) -> list:
        """Up to `n` items for `user` (ids as `canonical_id` gives them), nearest to the user tower's vector
        of the user's latest fields and recent items, leaving out the items the user had."""
        index = self.index
        if index is None or not len(index):
            return []
        live = str(user)
        with self.models.switcher.lease() as replica:
            if replica is None:
                return []
            query = self._query(replica, live)
        consumed = {self._keys[item] for item in map(str, self.seen.consumed(live)) if item in self._keys}
        return [canonical_id(self._items[key]) for key in index.search_one(query, n, exclude=consumed)]

    def _query(self, replica: Replica, user: str) -> np.ndarray:
        model: TwoTower = replica.model
        shared = {USER: user, **self.seen.user_fields.get(user, {})}
        config = model.config
        if config.history_field:   # the history the model learned with: of positives, or of every interaction
            recent = self.seen.recent(user) if config.history_positives else self.seen.consumed(user)
            shared[config.history_field] = [str(item) for item in recent[-config.history_length:]]
        columns = {spec.source_column for spec in model.specs}
        rows = RequestRows(1, shared={c: v for c, v in shared.items() if c in columns}, per_row={ITEM: [None]})
        with torch.no_grad():
            return model.towers(replica.featurizer.build(rows))[0][0].numpy()

    def _index(self, replica: Replica, rows: np.ndarray, replace: bool) -> None:
        """The vectors of the items at `rows` into the index: all of them as a new version (`replace`), or added."""
        model: TwoTower = replica.model
        keys = self._key_array[rows]
        vectors = np.empty((len(rows), model.out_dim), np.float32)
        with torch.no_grad():
            for start in range(0, len(rows), CHUNK):
                part = rows[start: start + CHUNK]
                content = torch.from_numpy(self._content[part]) if self.content is not None else None
                vectors[start: start + len(part)] = model.item_vectors(self._key_array[part], content).numpy()
                time.sleep(0)   # let request threads in between chunks
        if self.index is None:
            self.index = ItemIndex(model.out_dim, self.index_config)
        if replace:
            self.index.replace(keys, vectors)
        else:
            self.index.update(keys, vectors)
