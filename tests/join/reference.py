"""The joiner's rules written plainly in Python, one object per impression and action (as
freshrec's joiner was before its numba kernel): the oracle `test_kernel_matches_reference`
holds the kernel to, row by row, and `bench/join.py`'s baseline.

`ReferenceJoiner.process(rows)` takes (code, ts, key, kind, position) tuples, code 0 an
impression, 1 an action that counts, 2 one that does not; ts None or key None is invalid.
`out` lists (impression position, label, label ts, action kind or None) as examples became
final, `letters` (position, reason) as rows were rejected, `stats` the `JoinStats` counters.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable

from freshrec.join import JoinConfig, JoinStats


class _Impression:
    __slots__ = ("ts", "seq", "key", "position", "positive")

    def __init__(self, ts: float, seq: int, key: Hashable, position: int) -> None:
        self.ts, self.seq, self.key, self.position, self.positive = ts, seq, key, position, False


class _Action:
    __slots__ = ("ts", "seq", "key", "kind", "position", "alive")

    def __init__(self, ts: float, seq: int, key: Hashable, kind: str, position: int) -> None:
        self.ts, self.seq, self.key, self.kind, self.position, self.alive = ts, seq, key, kind, position, True


class ReferenceJoiner:
    def __init__(self, config: JoinConfig) -> None:
        self.config, self.stats = config, JoinStats()
        self.impressions: dict[Hashable, list[_Impression]] = {}
        self.early: dict[Hashable, list[_Action]] = {}
        self.closing: list = []    # heap of (window end, seq, impression)
        self.expiring: list = []   # heap of (ts + skew, seq, action)
        self.max_ts = self.watermark = -math.inf
        self.seq = self.held = self.pending = self.buffered = 0
        self.out: list[tuple] = []
        self.letters: list[tuple[int, str]] = []

    def process(self, rows: Iterable[tuple]) -> None:
        for code, ts, key, kind, position in rows:
            impression = code == 0
            if ts is None or key is None:
                self.stats.impressions += impression
                self.stats.actions += not impression
                self.stats.invalid_impressions += impression
                self.stats.invalid_actions += not impression
                self.letters.append((position, "bad_time" if ts is None else "missing_id"))
                continue
            if ts > self.max_ts:
                self.max_ts = ts
                self.advance(ts - self.config.allowed_lateness)
            elif ts < self.max_ts:
                self.stats.out_of_order += 1
            if impression:
                self._impression(ts, key, position)
            else:
                self._action(code, ts, key, kind, position)

    def advance(self, watermark: float) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        while self.closing and self.closing[0][0] <= watermark:
            end, _, impression = heapq.heappop(self.closing)
            self._close(impression, end)
        while self.expiring and self.expiring[0][0] < watermark:
            _, _, action = heapq.heappop(self.expiring)
            if action.alive:
                self._orphan(action)

    def _close(self, impression: _Impression, label_ts: float) -> None:
        group = self.impressions[impression.key]
        group.remove(impression)
        if not group:
            del self.impressions[impression.key]
        self.held -= 1
        if not impression.positive:
            self.pending -= 1
            self.stats.negatives += 1
            self.out.append((impression.position, 0.0, label_ts, None))

    def _orphan(self, action: _Action) -> None:
        self._unwait(action)
        self.stats.orphan_actions += 1
        self.letters.append((action.position, "orphan_action"))

    def _unwait(self, action: _Action) -> None:
        action.alive = False
        group = self.early[action.key]
        group.remove(action)
        if not group:
            del self.early[action.key]
        self.buffered -= 1

    def _impression(self, ts: float, key: Hashable, position: int) -> None:
        window = self.config.window
        self.stats.impressions += 1
        if ts < self.watermark:
            self.stats.late_impressions += 1
            self.letters.append((position, "late_event"))
            return
        group = self.impressions.get(key)
        if group and any(abs(held.ts - ts) < window for held in group):
            self.stats.duplicate_impressions += 1
            return
        impression = _Impression(ts, self.seq, key, position)
        self.seq += 1
        self.impressions.setdefault(key, []).append(impression)
        heapq.heappush(self.closing, (ts + window, impression.seq, impression))
        self.held += 1
        self.pending += 1
        if key in self.early:
            self._claim(impression)
        while self.held > self.config.max_pending:
            end, _, oldest = heapq.heappop(self.closing)
            self.stats.evicted_impressions += not oldest.positive
            self._close(oldest, min(max(self.max_ts, oldest.ts), end))

    def _claim(self, impression: _Impression) -> None:
        start, end = impression.ts - self.config.skew, impression.ts + self.config.window
        claimed = sorted((a for a in self.early[impression.key] if start <= a.ts < end), key=lambda a: (a.ts, a.seq))
        for n, action in enumerate(claimed):
            self._unwait(action)
            if n == 0:
                self.stats.early_actions += 1
                self._positive(impression, action.ts, action.kind)
            else:
                self.stats.duplicate_actions += 1

    def _positive(self, impression: _Impression, ts: float, kind: str) -> None:
        self.stats.positives += 1
        self.stats.skewed_actions += ts < impression.ts
        self.out.append((impression.position, 1.0, max(ts, impression.ts), kind))
        impression.positive = True
        self.pending -= 1

    def _match(self, key: Hashable, ts: float) -> _Impression | None:
        window, skew, skewed = self.config.window, self.config.skew, None
        for impression in self.impressions.get(key, ()):
            if impression.ts <= ts < impression.ts + window:
                return impression
            if impression.ts - skew <= ts < impression.ts:
                skewed = impression
        return skewed

    def _action(self, code: int, ts: float, key: Hashable, kind: str, position: int) -> None:
        self.stats.actions += 1
        if code != 1:
            self.stats.ignored_actions += 1
        elif (impression := self._match(key, ts)) is not None:
            if impression.positive:
                self.stats.duplicate_actions += 1
            else:
                self._positive(impression, ts, kind)
        elif ts + self.config.skew < self.watermark:
            self.stats.late_actions += 1
            self.letters.append((position, "late_event"))
        else:
            action = _Action(ts, self.seq, key, kind, position)
            self.seq += 1
            self.early.setdefault(key, []).append(action)
            heapq.heappush(self.expiring, (ts + self.config.skew, action.seq, action))
            self.buffered += 1
            while self.buffered > self.config.max_pending:
                _, _, oldest = heapq.heappop(self.expiring)
                if oldest.alive:
                    self.stats.evicted_actions += 1
                    self._orphan(oldest)
