"""`CandidateIndex`: what `/recommend` ranks, kept up to date from the interactions the trainer
publishes. Three sources, all in event time:

- recent popularity: each item's positive interactions, decayed with a half-life;
- item-to-item co-occurrence: items liked by the same user close together (each positive is
  paired with the user's last `history` positives), top `neighbours` per item;
- the user's recent positives, which seed the co-occurrence lookup.

Items the user already interacted with (the last `consumed` per user) are filtered out. It also
keeps the latest user- and item-owned fields (genres, age...) so candidates can be ranked with
their features. Users and items are known by their ids' live form, strings (an int64 column's 7
is "7", as in a request).

A server's follower thread calls `observe` for every delta while request threads rank: users and
items get integer codes, and popularity, histories and co-occurrence live in arrays that one numba
pass updates without the GIL (`_like_all`), so a delta of thousands of events holds request
threads up for a few milliseconds; the Python left (codes, consumed items, the users' recency, the
latest fields once per entity) works a slice of rows at a time and yields between slices.

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
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.event import ITEM, LABEL, STANDARD_COLUMNS, TS, USER

__all__ = ["CandidateConfig", "CandidateIndex"]

TOP = 1000  # popular items kept ranked between updates


@dataclass(frozen=True)
class CandidateConfig:
    """- `half_life`: seconds of event time for popularity to halve;
    - `history`: recent positives per user (co-occurrence seeds and pairs);
    - `neighbours`: co-occurring items kept per item; `consumed`: items remembered per user;
    - `users`: users remembered, whatever they did (least recently active forgotten first, with their
      consumed items, fields and recent positives)."""

    half_life: float = 86_400.0
    history: int = 20
    neighbours: int = 50
    consumed: int = 1000
    users: int = 1_000_000


@numba.njit(nogil=True, cache=True, inline="always")
def _bump(a, b, nb_item, nb_count, nb_len):
    """Count one more co-occurrence of item b with item a (appended when new)."""
    for j in range(nb_len[a]):
        if nb_item[a, j] == b:
            nb_count[a, j] += 1.0
            return
    nb_item[a, nb_len[a]] = b
    nb_count[a, nb_len[a]] = 1.0
    nb_len[a] += 1


@numba.njit(nogil=True, cache=True)
def _trim(a, keep, nb_item, nb_count, nb_len):
    """Keep item a's `keep` strongest co-occurrences, strongest first (ties in their order)."""
    n = nb_len[a]
    order = np.argsort(-nb_count[a, :n], kind="mergesort")[:keep]
    items, counts = nb_item[a, order].copy(), nb_count[a, order].copy()
    nb_item[a, :len(order)] = items
    nb_count[a, :len(order)] = counts
    nb_len[a] = len(order)


@numba.njit(nogil=True, cache=True)
def _like_all(users, items, times, reset, clock, half_life, neighbours,  # noqa: PLR0913
              popularity, history, history_len, nb_item, nb_count, nb_len):
    """Each positive (user code, item code, event time, NaN: the clock) in order: popularity by
    forward decay (`clock` = [origin (NaN before the first), latest time]), co-occurrence with the
    user's recent positives (their counts trimmed to `neighbours` past twice that), then the item
    joins the user's history; `reset[e]`: the user's code was given to a new user (empty history)."""
    depth = history.shape[1]
    for e in range(len(users)):
        u, i = users[e], items[e]
        if reset[e]:
            history_len[u] = 0
        ts = times[e]
        if ts != ts:
            ts = clock[1]
        if clock[0] != clock[0]:
            clock[0] = ts
        clock[1] = max(clock[1], ts)
        exponent = (ts - clock[0]) / half_life
        if exponent > 512:   # move the origin before the weights could overflow
            shift = 2.0 ** -exponent
            for j in range(len(popularity)):
                value = popularity[j] * shift
                popularity[j] = value if value > 1e-300 else 0.0
            clock[0], exponent = ts, 0.0
        popularity[i] += 2.0 ** exponent
        for h in range(history_len[u]):
            other = history[u, h]
            if other != i:
                _bump(i, other, nb_item, nb_count, nb_len)
                _bump(other, i, nb_item, nb_count, nb_len)
                if nb_len[other] > 2 * neighbours:
                    _trim(other, neighbours, nb_item, nb_count, nb_len)
        if nb_len[i] > 2 * neighbours:
            _trim(i, neighbours, nb_item, nb_count, nb_len)
        if history_len[u] == depth:
            history[u, :depth - 1] = history[u, 1:].copy()
            history[u, depth - 1] = i
        else:
            history[u, history_len[u]] = i
            history_len[u] += 1


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with room for at least `rows` rows (geometric growth; new rows zero)."""
    if rows <= len(array):
        return array
    out = np.zeros((max(rows, 2 * len(array), 64), *array.shape[1:]), array.dtype)
    out[: len(array)] = array
    return out


class CandidateIndex:
    """Popularity, co-occurrence, recent and consumed items, and the latest entity fields."""

    def __init__(self, config: CandidateConfig | None = None, item_columns: Iterable[str] = ()) -> None:
        self.config = c = config or CandidateConfig()
        self.item_columns = frozenset(item_columns)  # extra columns describing the item; others the user
        self._items: list[Hashable] = []                     # item code -> item
        self._item_codes: dict[Hashable, int] = {}
        self._interacted: set[Hashable] = set()              # every item interacted with
        self._interacted_order: list[Hashable] = []          # the same, in order of first sight
        # every user remembered -> its history row (-1: no positive yet), least recently active first
        self._users: OrderedDict[Hashable, int] = OrderedDict()
        self._free_users: list[int] = []                     # history rows of users forgotten
        self._user_rows = 0                                  # history rows handed out
        self._clock = np.array([np.nan, 0.0])
        width = 2 * c.neighbours + c.history + 1   # a row between two trims
        self._popularity = np.zeros(0)
        self._nb_item, self._nb_count = np.zeros((0, width), np.int32), np.zeros((0, width))
        self._nb_len = np.zeros(0, np.int32)
        self._history, self._history_len = np.zeros((0, c.history), np.int32), np.zeros(0, np.int32)
        self._consumed: dict[Hashable, dict[Hashable, None]] = {}
        self.user_fields: dict[Hashable, dict] = {}
        self.item_fields: dict[Hashable, dict] = {}
        self.observed = 0
        self._top: list[Hashable] = []

    def observe(self, interactions: pa.Table, slice_rows: int = 512) -> None:
        """Learn from interactions (columns ts, user_id, item_id, label and entity fields); a row is
        positive when its label is > 0 or missing. The Python part works through `slice_rows` rows
        at a time and yields the GIL between slices; the arrays' update releases it."""
        users, items = (pc.cast(interactions.column(key), pa.string()).to_pylist() for key in (USER, ITEM))
        n = len(users)
        times = pc.fill_null(interactions.column(TS), np.nan).to_numpy().astype(np.float64) if n else np.zeros(0)
        if LABEL in interactions.column_names:
            labels = pc.fill_null(pc.cast(interactions.column(LABEL), pa.float64()), np.nan).to_numpy()
            positive = np.isnan(labels) | (labels > 0)
        else:
            positive = np.ones(n, bool)
        liked = []   # (row, user code, item code, code reused)
        for start in range(0, n, slice_rows):
            self._book(users, items, positive, start, min(start + slice_rows, n), liked)
            time.sleep(0)
        if liked:
            rows, user_codes, item_codes, reset = (np.array(column) for column in zip(*liked))
            self._grow(len(self._items), self._user_rows)
            _like_all(user_codes.astype(np.int32), item_codes.astype(np.int32), times[rows], reset.astype(np.bool_),
                      self._clock, float(self.config.half_life), self.config.neighbours, self._popularity,
                      self._history, self._history_len, self._nb_item, self._nb_count, self._nb_len)
        self._remember_fields(interactions, users, items)
        self.observed += n
        self._top = self.popular(TOP)

    def _book(self, users: list, items: list, positive: np.ndarray, start: int, stop: int, liked: list) -> None:
        """Rows start..stop in Python: consumed items, codes, the users' recency (forgetting the
        least recently active beyond `users`, whether they liked anything or not: their consumed
        items, fields and history row); the positives to `liked`."""
        consumed, limit, known, most = self._consumed, self.config.consumed, self._users, self.config.users
        for row in range(start, stop):
            user, item = users[row], items[row]
            if user is None or item is None:
                continue
            seen = consumed.get(user)
            if seen is None:
                seen = consumed[user] = {}
            seen.pop(item, None)
            seen[item] = None               # dicts keep insertion order: the oldest come first
            if len(seen) > limit:
                del seen[next(iter(seen))]
            if item not in self._interacted:
                self._interacted.add(item)
                self._interacted_order.append(item)
            user_code = known.get(user)
            if user_code is not None:
                known.move_to_end(user)
            else:
                user_code = known[user] = -1
                if len(known) > most:
                    old, old_code = known.popitem(last=False)
                    if old_code >= 0:
                        self._free_users.append(old_code)
                    consumed.pop(old, None)
                    self.user_fields.pop(old, None)
            if positive[row]:
                code = self._item_codes.get(item)
                if code is None:
                    code = self._item_codes[item] = len(self._items)
                    self._items.append(item)
                reused = user_code < 0 and bool(self._free_users)
                if reused:
                    user_code = known[user] = self._free_users.pop()
                elif user_code < 0:
                    user_code = known[user] = self._user_rows
                    self._user_rows += 1
                liked.append((row, user_code, code, reused))

    def _grow(self, items: int, users: int) -> None:
        self._popularity = _grown(self._popularity, items)
        self._nb_item, self._nb_count = _grown(self._nb_item, items), _grown(self._nb_count, items)
        self._nb_len = _grown(self._nb_len, items)
        self._history, self._history_len = _grown(self._history, users), _grown(self._history_len, users)

    def _remember_fields(self, interactions: pa.Table, users: list, items: list) -> None:
        """Keep the latest non-null value of each extra column under the entity it describes: the
        last row of each entity found with numpy, then one dict update per entity."""
        extra = [c for c in interactions.column_names if c not in STANDARD_COLUMNS]
        for key, entities, store in ((ITEM, items, self.item_fields), (USER, users, self.user_fields)):
            columns = [c for c in extra if (c in self.item_columns) == (key == ITEM)]
            if not columns:
                continue
            encoded = pc.dictionary_encode(interactions.column(key)).combine_chunks()
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            for column in columns:
                values = interactions.column(column)
                valid = (codes >= 0) & values.is_valid().to_numpy(zero_copy_only=False)
                rows = np.flatnonzero(valid)[::-1]
                _, last = np.unique(codes[rows], return_index=True)
                rows = np.sort(rows[last])   # each entity's last row, in row order
                for entity, value in zip((entities[r] for r in rows), values.take(rows).to_pylist()):
                    if key == USER and entity not in self._users:
                        continue   # forgotten in this very delta (more users than `users` in it)
                    known = store.get(entity)
                    if known is None:
                        store[entity] = {column: value}
                    else:
                        known[column] = value

    def items(self, start: int = 0) -> list[Hashable]:
        """The items interacted with (positively or not), in order of first sight, from the `start`-th on (a
        reader that took n of them asks for `items(n)`: what came since)."""
        return self._interacted_order[start:]

    def consumed(self, user: Hashable) -> list[Hashable]:
        """The items `user` interacted with (the last `consumed` of them)."""
        return list(self._consumed.get(user, ()))

    def popular(self, n: int) -> list[Hashable]:
        """The `n` most popular items now (ties by id)."""
        scores = self._popularity[: len(self._items)]
        live = np.flatnonzero(scores > 0)
        if len(live) > n > 0:
            threshold = np.partition(scores[live], len(live) - n)[len(live) - n]
            live = live[scores[live] >= threshold]
        ranked = sorted(live.tolist(), key=lambda code: (-scores[code], self._items[code]))[:n]
        return [self._items[code] for code in ranked]

    def recent(self, user: Hashable) -> list[Hashable]:
        """The user's recent positives, newest last. (Requests read while `observe` writes in the sync
        thread: a code can be booked before the arrays grow to hold it; such a user has none yet.)"""
        code = self._users.get(user, -1)
        history, lengths = self._history, self._history_len
        if code < 0 or code >= len(lengths) or code >= len(history):
            return []
        return [self._items[i] for i in history[code, : lengths[code]].tolist()]

    def _cooccurring(self, user: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """The codes of the items co-occurring with the user's recent positives and their counts summed
        over those positives, strongest first (ties in code order): a few numpy calls over the
        co-occurrence rows of the user's history (see `recent` on reading while `observe` writes)."""
        code = self._users.get(user, -1)
        history, history_len = self._history, self._history_len
        items, counts, lengths = self._nb_item, self._nb_count, self._nb_len
        if code < 0 or code >= min(len(history), len(history_len)):
            return np.zeros(0, np.int32), np.zeros(0)
        seeds = history[code, : history_len[code]]
        seeds = seeds[seeds < min(len(items), len(counts), len(lengths))]
        held = np.arange(items.shape[1]) < lengths[seeds][:, None]
        codes, inverse = np.unique(items[seeds][held], return_inverse=True)
        sums = np.bincount(inverse, counts[seeds][held], minlength=len(codes))
        order = np.argsort(-sums, kind="stable")
        return codes[order], sums[order]

    def candidates(self, user: Hashable, n: int) -> list[Hashable]:
        """Up to `n` items for `user`: co-occurring with the user's recent positives first (by
        summed counts, ties by id), then popular ones; none the user has interacted with."""
        consumed = self._consumed.get(user, {})
        codes, sums = self._cooccurring(user)
        ranked: list[Hashable] = []
        for tied in np.split(codes, np.flatnonzero(np.diff(sums)) + 1) if len(codes) else ():
            fresh = [item for item in map(self._items.__getitem__, tied.tolist()) if item not in consumed]
            ranked += heapq.nsmallest(n - len(ranked), fresh)
            if len(ranked) == n:
                return ranked
        chosen = set(ranked)
        top = self._top if n + len(consumed) <= TOP else self.popular(n + len(consumed) + len(ranked))
        for item in top:
            if item not in consumed and item not in chosen:
                ranked.append(item)
                if len(ranked) == n:
                    break
        return ranked
