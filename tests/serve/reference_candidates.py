"""A plain-Python candidate index (dicts, one event at a time): the reference that
`freshrec.serve.CandidateIndex` (arrays and a numba pass) must agree with."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable

import pyarrow as pa

from freshrec.events.event import ITEM, LABEL, STANDARD_COLUMNS, TS, USER
from freshrec.serve.candidates import TOP, CandidateConfig


class ReferenceIndex:
    """The candidate index as plain Python dicts, event by event: the oracle of the array version."""

    def __init__(self, config: CandidateConfig | None = None, item_columns: Iterable[str] = ()) -> None:
        self.config = config or CandidateConfig()
        self.item_columns = frozenset(item_columns)  # extra columns describing the item; others the user
        self._popularity: dict[str, float] = {}   # forward decay: weights relative to `self._origin`
        self._origin: float | None = None
        self._clock = 0.0
        self._neighbours: dict[str, dict[str, float]] = defaultdict(dict)
        self._recent: OrderedDict[str, deque[str]] = OrderedDict()   # every user, least recently active first
        self._consumed: dict[str, dict[str, None]] = {}
        self.user_fields: dict[str, dict] = {}
        self.item_fields: dict[str, dict] = {}
        self.observed = 0
        self._top: list[str] = []

    def observe(self, interactions: pa.Table) -> None:
        self._observe(interactions)
        self._top = self.popular(TOP)

    def _observe(self, interactions: pa.Table) -> None:
        rows = interactions.to_pydict()
        users, items, times = rows[USER], rows[ITEM], rows[TS]
        labels = rows.get(LABEL) or [None] * len(users)
        consumed, limit = self._consumed, self.config.consumed
        for user, item, ts, label in zip(users, items, times, labels):
            if user is None or item is None:
                continue
            seen = consumed.get(user)
            if seen is None:
                seen = consumed[user] = {}
            seen.pop(item, None)
            seen[item] = None               # dicts keep insertion order: the oldest come first
            if len(seen) > limit:
                del seen[next(iter(seen))]
            history = self._recent.pop(user, None) or deque(maxlen=self.config.history)
            self._recent[user] = history
            if label is None or math.isnan(label) or label > 0:
                self._like(history, item, self._clock if ts is None or math.isnan(ts) else ts)
            if len(self._recent) > self.config.users:
                old, _ = self._recent.popitem(last=False)
                self._consumed.pop(old, None)
                self.user_fields.pop(old, None)
        self._remember_fields(rows)
        self.observed += len(users)

    def _remember_fields(self, rows: dict[str, list]) -> None:
        """Keep the latest non-null value of each extra column under the entity it describes."""
        extra = [c for c in rows if c not in STANDARD_COLUMNS]
        for key, columns, store in ((ITEM, [c for c in extra if c in self.item_columns], self.item_fields),
                                    (USER, [c for c in extra if c not in self.item_columns], self.user_fields)):
            for column in columns:
                latest = {e: v for e, v in zip(rows[key], rows[column]) if e is not None and v is not None}
                for entity, value in latest.items():
                    if key == USER and entity not in self._recent:
                        continue   # forgotten
                    known = store.get(entity)
                    if known is None:
                        store[entity] = {column: value}
                    else:
                        known[column] = value

    def _like(self, history: deque[str], item: str, ts: float) -> None:
        """A positive of the user whose recent positives are `history`."""
        c = self.config
        self._popularity[item] = self._popularity.get(item, 0.0) + self._weight(ts)
        neighbours = self._neighbours
        mine = neighbours[item]
        for other in history:
            if other != item:
                mine[other] = mine.get(other, 0.0) + 1.0
                theirs = neighbours[other]
                theirs[item] = theirs.get(item, 0.0) + 1.0
                if len(theirs) > 2 * c.neighbours:
                    self._trim(other)
        if len(mine) > 2 * c.neighbours:
            self._trim(item)
        history.append(item)

    def _weight(self, ts: float) -> float:
        """2^((ts - origin) / half_life): a later event weighs more, which ranks items exactly as
        decaying every score would (forward decay), at O(1) per event. The origin moves (and the
        scores are rescaled once) before the weights could overflow."""
        if self._origin is None:
            self._origin = ts
        self._clock = max(self._clock, ts)
        exponent = (ts - self._origin) / self.config.half_life
        if exponent > 512:
            shift = math.exp2(-exponent)
            self._popularity = {k: v * shift for k, v in self._popularity.items() if v * shift > 1e-300}
            self._origin, exponent = ts, 0.0
        return math.exp2(exponent)

    def _trim(self, item: str) -> None:
        """Keep the item's `neighbours` strongest co-occurrences."""
        row = self._neighbours[item]
        self._neighbours[item] = dict(heapq.nlargest(self.config.neighbours, row.items(), key=lambda kv: kv[1]))

    def popular(self, n: int) -> list[str]:
        """The `n` most popular items now (ties by id)."""
        return [k for k, _ in heapq.nsmallest(n, self._popularity.items(), key=lambda kv: (-kv[1], kv[0]))]

    def recent(self, user: str) -> list[str]:
        """The user's recent positives, newest last."""
        return list(self._recent.get(user, ()))

    def candidates(self, user: str, n: int) -> list[str]:
        """Up to `n` items for `user`: co-occurring with the user's recent positives first (by
        summed counts), then popular ones; none the user has interacted with."""
        consumed = self._consumed.get(user, {})
        scores: dict[str, float] = defaultdict(float)
        for seed in self.recent(user):
            for item, count in self._neighbours.get(seed, {}).items():
                if item not in consumed:
                    scores[item] += count
        ranked = [k for k, _ in heapq.nsmallest(n, scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        if len(ranked) < n:
            chosen = set(ranked)
            top = self._top if n + len(consumed) <= TOP else self.popular(n + len(consumed) + len(ranked))
            for item in top:
                if item not in consumed and item not in chosen:
                    ranked.append(item)
                    if len(ranked) == n:
                        break
        return ranked
