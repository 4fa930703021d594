"""`Joiner`: impressions and their delayed actions, joined online into labelled examples.

Rows are taken one by one in arrival order (the chunk-level plumbing is Arrow). Each row first
moves the watermark (largest ts seen minus `allowed_lateness`): windows whose end it reaches close
as negatives (label_ts = the window's end) and early actions it passes become orphans. Then:

- an impression older than the watermark is late; one whose window overlaps that of a held
  impression of its key is a duplicate; else it is held until its window closes, and claims the
  earliest waiting early action of its key that falls in its window (a positive at once);
- an action that counts (see `JoinConfig`) and falls in the window of a held impression of its
  key makes it positive (emitted now, label_ts = the action's ts), or is a duplicate if it
  already is; with no such impression it is late if the watermark has passed it, else it waits
  as an early action until an impression claims it or the watermark passes it (an orphan).

The output depends only on the sequence of rows, not on how they are cut into chunks, and comes
in the order the examples became final. Memory: impressions are held for `window` +
`allowed_lateness` seconds of event time, early actions for `allowed_lateness` + `skew`, each
kind capped at `max_pending`.

>>> import numpy as np, pyarrow as pa
>>> from freshrec.events.event import EventChunk
>>> from freshrec.join.example import examples
>>> joiner = Joiner(JoinConfig(window=60.0, allowed_lateness=0.0, key="impression_id"))
>>> table = pa.table({"ts": [0.0, 5.0, 30.0, 100.0], "user_id": ["u", "u", "u", "v"],
...                   "item_id": ["a", "b", "a", "c"], "kind": ["impression", "impression", "click", "impression"],
...                   "impression_id": ["r1", "r2", "r1", "r3"]})
>>> out = joiner.process(EventChunk(table, np.arange(4), "log"))
>>> [(x.event.event_id, x.event.fields["impression_id"], x.label, x.label_ts, x.action) for x in examples(out)]
[('log:0', 'r1', 1.0, 30.0, 'click'), ('log:1', 'r2', 0.0, 65.0, None)]
>>> [(x.event.event_id, x.label, x.label_ts) for x in examples(joiner.flush())], joiner.stats.negatives
([('log:3', 0.0, 160.0)], 2)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.join.config import JoinConfig, JoinStats
from freshrec.join.example import example_chunk
from freshrec.join.rows import ACTION, IMPRESSION, POSITION, SOURCE, decode
from freshrec.join.state import Action, Impression, JoinState, hold, load_state, save_state, wait

__all__ = ["Joiner"]


class Joiner:
    """Joins impressions with their delayed actions (see the module doc); rejected rows go to
    `dead_letters` when given, and every outcome is counted in `stats`."""

    def __init__(self, config: JoinConfig | None = None, dead_letters: DeadLetterSink | None = None) -> None:
        self.config = config or JoinConfig()
        self.dead_letters = dead_letters
        self.stats = JoinStats()
        self._s = JoinState()

    @property
    def watermark(self) -> float:
        """Events with a ts below this are late."""
        return self._s.watermark

    @property
    def pending(self) -> int:
        """Impressions held with no label yet."""
        return self._s.pending

    @property
    def buffered(self) -> int:
        """Early actions waiting for their impression."""
        return self._s.buffered

    @property
    def memory(self) -> dict[str, int]:
        """What is held: impressions (labelled or not), stored rows, early actions."""
        s = self._s
        return {"impressions": s.held, "rows": len(s.rows), "actions": s.buffered}

    def process(self, chunk: EventChunk) -> EventChunk | None:
        """Take the rows of `chunk`; the examples that became final with them, or None."""
        rows, s = decode(chunk, self.config), self._s
        positions = chunk.positions.tolist()
        kept: list[int] = []
        rids: list[int] = []
        for i, (code, ts, key) in enumerate(zip(rows.codes, rows.ts, rows.keys, strict=True)):
            if ts is None or key is None:
                self._invalid(code == IMPRESSION, ts is None, chunk.source, positions[i])
                continue
            if ts > s.max_ts:
                s.max_ts = ts
                self._advance(ts - self.config.allowed_lateness)
            elif ts < s.max_ts:
                self.stats.out_of_order += 1
            if code == IMPRESSION:
                if (rid := self._impression(ts, key, chunk.source, positions[i])) >= 0:
                    kept.append(i)
                    rids.append(rid)
            else:
                self._action(code, ts, key, rows.kinds[i], chunk.source, positions[i])
        s.rows.append(chunk, kept, rids)
        return self._emit()

    def advance(self, watermark: float) -> EventChunk | None:
        """Move the watermark up to `watermark` (never back): the examples that became final."""
        if math.isnan(watermark):
            raise ValueError("the watermark is NaN")
        self._advance(watermark)
        return self._emit()

    def flush(self) -> EventChunk | None:
        """End of stream: close every window (as `advance(inf)`; later rows are all late)."""
        return self.advance(math.inf)

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint as numpy arrays and Arrow tables (see `freshrec.join.state`)."""
        return save_state(self._s, self.stats, self.config)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of a joiner with the same config, exactly as it would have."""
        self._s, self.stats = load_state(state, self.config)

    def _invalid(self, impression: bool, bad_time: bool, source: str, position: int) -> None:
        self.stats.impressions += impression
        self.stats.actions += not impression
        self.stats.invalid_impressions += impression
        self.stats.invalid_actions += not impression
        if bad_time:
            self._dead(source, position, "bad_time", "ts is missing or not finite")
        else:
            self._dead(source, position, "missing_id", f"no {' or '.join(self.config.key_columns)}")

    def _dead(self, source: str, position: int, reason: str, detail: str) -> None:
        if self.dead_letters is not None:
            self.dead_letters.put(DeadLetter(source, position, reason, detail))

    def _advance(self, watermark: float) -> None:
        s = self._s
        if watermark <= s.watermark:
            return
        s.watermark = watermark
        while s.closing and s.closing[0][0] <= watermark:
            end, _, impression = heapq.heappop(s.closing)
            self._close(impression, end)
        while s.expiring and s.expiring[0][0] < watermark:
            _, _, action = heapq.heappop(s.expiring)
            if action.alive:
                self._orphan(action)

    def _close(self, impression: Impression, label_ts: float) -> None:
        s = self._s
        group = s.impressions[impression.key]
        group.remove(impression)
        if not group:
            del s.impressions[impression.key]
        s.held -= 1
        if not impression.positive:
            s.pending -= 1
            self.stats.negatives += 1
            s.out.append((impression.rid, 0.0, label_ts, None))

    def _orphan(self, action: Action) -> None:
        self._unwait(action)
        self.stats.orphan_actions += 1
        self._dead(action.source, action.position, "orphan_action",
                   f"no impression of {action.key!r} claimed this {action.kind} at ts={action.ts}")

    def _unwait(self, action: Action) -> None:
        s = self._s
        action.alive = False
        group = s.early[action.key]
        group.remove(action)
        if not group:
            del s.early[action.key]
        s.buffered -= 1

    def _impression(self, ts: float, key: Hashable, source: str, position: int) -> int:
        """Hold a new impression; its row id, or -1 when it is dropped."""
        s, window = self._s, self.config.window
        self.stats.impressions += 1
        if ts < s.watermark:
            self.stats.late_impressions += 1
            self._dead(source, position, "late_event", f"impression at ts={ts} is below the watermark {s.watermark}")
            return -1
        group = s.impressions.get(key)
        if group and any(abs(held.ts - ts) < window for held in group):
            self.stats.duplicate_impressions += 1
            return -1
        impression = Impression(ts, s.seq, key, s.rid)
        s.seq += 1
        s.rid += 1
        hold(s, impression, window)
        if key in s.early:
            self._claim(impression)
        while s.held > self.config.max_pending:
            end, _, oldest = heapq.heappop(s.closing)
            self.stats.evicted_impressions += not oldest.positive
            self._close(oldest, min(max(s.max_ts, oldest.ts), end))
        return impression.rid

    def _claim(self, impression: Impression) -> None:
        """The new `impression` takes the early actions of its key that fall in its window."""
        start, end = impression.ts - self.config.skew, impression.ts + self.config.window
        waiting = self._s.early[impression.key]
        claimed = sorted((a for a in waiting if start <= a.ts < end), key=lambda a: (a.ts, a.seq))
        for n, action in enumerate(claimed):
            self._unwait(action)
            if n == 0:
                self.stats.early_actions += 1
                self._positive(impression, action.ts, action.kind)
            else:
                self.stats.duplicate_actions += 1

    def _positive(self, impression: Impression, ts: float, kind: str) -> None:
        s = self._s
        self.stats.positives += 1
        self.stats.skewed_actions += ts < impression.ts
        s.out.append((impression.rid, 1.0, max(ts, impression.ts), kind))
        impression.positive = True
        s.pending -= 1

    def _match(self, key: Hashable, ts: float) -> Impression | None:
        """The held impression of `key` whose window holds `ts`; windows of one key never overlap,
        and `skew < window`, so there is at most one with ts in [start, start + window) and at
        most one with ts in [start - skew, start)."""
        window, skew, skewed = self.config.window, self.config.skew, None
        for impression in self._s.impressions.get(key, ()):
            if impression.ts <= ts < impression.ts + window:
                return impression
            if impression.ts - skew <= ts < impression.ts:
                skewed = impression
        return skewed

    def _action(self, code: int, ts: float, key: Hashable, kind: str, source: str, position: int) -> None:
        s, stats = self._s, self.stats
        stats.actions += 1
        if code != ACTION:
            stats.ignored_actions += 1
        elif (impression := self._match(key, ts)) is not None:
            if impression.positive:
                stats.duplicate_actions += 1
            else:
                self._positive(impression, ts, kind)
        elif ts + self.config.skew < s.watermark:
            stats.late_actions += 1
            self._dead(source, position, "late_event", f"{kind} at ts={ts} is below the watermark {s.watermark}"
                       " and no impression is open for it")
        else:
            wait(s, Action(ts, s.seq, key, kind, position, source), self.config.skew)
            s.seq += 1
            while s.buffered > self.config.max_pending:
                _, _, oldest = heapq.heappop(s.expiring)
                if oldest.alive:
                    stats.evicted_actions += 1
                    self._orphan(oldest)

    def _emit(self) -> EventChunk | None:
        s = self._s
        if not s.out:
            return None
        rids, labels, label_ts, actions = zip(*s.out, strict=True)
        s.out = []
        rows = s.rows.take(np.array(rids, np.int64))
        positions = rows.column(POSITION).to_numpy()
        sources = rows.column(SOURCE).to_pylist()
        rows = rows.drop_columns([POSITION, SOURCE])
        return example_chunk(rows, positions, sources, labels, label_ts, actions, self.config.name)
