"""`CandidateIndex`: what `/recommend` ranks, kept up to date from the interactions the trainer
publishes. Three sources, all in event time:

- recent popularity: each item's positive interactions, decayed with a half-life;
- item-to-item co-occurrence: items liked by the same user close together (each positive is
  paired with the user's last `history` positives), top `neighbours` per item;
- the user's recent positives, which seed the co-occurrence lookup.

Items the user already interacted with (the last `consumed` per user) are filtered out. It also
keeps the latest user- and item-owned fields (genres, age...) so candidates can be ranked with
their features.

>>> import pyarrow as pa
>>> index = CandidateIndex()
>>> index.observe(pa.table({"ts": [1.0, 2.0, 3.0, 4.0], "user_id": ["a", "a", "b", "b"],
...                         "item_id": ["x", "y", "x", "z"], "label": [1.0, 1.0, 1.0, 0.0]}))
>>> index.candidates("b", 5)           # y co-occurs with x (b liked x); x and z are consumed
['y']
>>> index.candidates("new user", 5)    # popularity only
['x', 'y']
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from freshrec.events.event import ITEM, LABEL, STANDARD_COLUMNS, TS, USER

__all__ = ["CandidateConfig", "CandidateIndex"]

TOP = 1000  # popular items kept ranked between updates


@dataclass(frozen=True)
class CandidateConfig:
    """- `half_life`: seconds of event time for popularity to halve;
    - `history`: recent positives per user (co-occurrence seeds and pairs);
    - `neighbours`: co-occurring items kept per item; `consumed`: items remembered per user;
    - `users`: users remembered (least recently active forgotten first)."""

    half_life: float = 86_400.0
    history: int = 20
    neighbours: int = 50
    consumed: int = 1000
    users: int = 1_000_000


class CandidateIndex:
    """Popularity, co-occurrence, recent and consumed items, and the latest entity fields."""

    def __init__(self, config: CandidateConfig | None = None, item_columns: Iterable[str] = ()) -> None:
        self.config = config or CandidateConfig()
        self.item_columns = frozenset(item_columns)  # extra columns describing the item; others the user
        self._popularity: dict[str, float] = {}   # score at `self._clock`
        self._clock = 0.0
        self._neighbours: dict[str, dict[str, float]] = defaultdict(dict)
        self._recent: OrderedDict[str, deque[str]] = OrderedDict()
        self._consumed: dict[str, OrderedDict[str, None]] = {}
        self.user_fields: dict[str, dict] = {}
        self.item_fields: dict[str, dict] = {}
        self.observed = 0
        self._top: list[str] = []

    def observe(self, interactions: pa.Table) -> None:
        """Learn from interactions (columns ts, user_id, item_id, label and entity fields);
        a row is positive when its label is > 0 or missing."""
        rows = interactions.to_pydict()
        users, items, times = rows[USER], rows[ITEM], rows[TS]
        labels = rows.get(LABEL) or [None] * len(users)
        extra = [c for c in interactions.column_names if c not in STANDARD_COLUMNS]
        for i, (user, item, ts, label) in enumerate(zip(users, items, times, labels)):
            if user is None or item is None:
                continue
            self._consume(user, item)
            if extra:
                self._remember_fields(user, item, {c: rows[c][i] for c in extra})
            if label is None or math.isnan(label) or label > 0:
                self._like(user, item, self._clock if ts is None or math.isnan(ts) else ts)
        self.observed += len(users)
        self._top = self.popular(TOP)

    def _remember_fields(self, user: str, item: str, values: dict) -> None:
        """Keep the non-null values under the entity each field describes."""
        for name, value in values.items():
            if value is not None:
                if name in self.item_columns:
                    self.item_fields.setdefault(item, {})[name] = value
                else:
                    self.user_fields.setdefault(user, {})[name] = value

    def _consume(self, user: str, item: str) -> None:
        seen = self._consumed.setdefault(user, OrderedDict())
        seen[item] = None
        seen.move_to_end(item)
        if len(seen) > self.config.consumed:
            seen.popitem(last=False)

    def _like(self, user: str, item: str, ts: float) -> None:
        c = self.config
        if ts > self._clock:  # rescale every score to the new clock (lazily: one factor)
            factor = math.exp2(-(ts - self._clock) / c.half_life)
            if factor < 1e-6:
                self._popularity = {k: v * factor for k, v in self._popularity.items() if v * factor > 1e-9}
            else:
                self._popularity = {k: v * factor for k, v in self._popularity.items()}
            self._clock = ts
        self._popularity[item] = self._popularity.get(item, 0.0) + 1.0
        history = self._recent.pop(user, None) or deque(maxlen=c.history)
        self._recent[user] = history
        for other in history:
            if other != item:
                self._pair(other, item)
                self._pair(item, other)
        history.append(item)
        if len(self._recent) > c.users:
            old, _ = self._recent.popitem(last=False)
            self._consumed.pop(old, None)
            self.user_fields.pop(old, None)

    def _pair(self, item: str, other: str) -> None:
        row = self._neighbours[item]
        row[other] = row.get(other, 0.0) + 1.0
        if len(row) > 2 * self.config.neighbours:
            keep = heapq.nlargest(self.config.neighbours, row.items(), key=lambda kv: kv[1])
            self._neighbours[item] = dict(keep)

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
