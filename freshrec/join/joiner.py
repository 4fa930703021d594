"""`Joiner`: impressions and their delayed actions, joined online into labelled examples.

Rows are taken one by one in arrival order by a numba kernel (`freshrec.join.kernel`; the
chunk-level plumbing is Arrow, keys are 64-bit hashes: `freshrec.join.rows`). Each row first
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

import math
from typing import Any

import numpy as np

from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.join import kernel
from freshrec.join.config import JoinConfig, JoinStats
from freshrec.join.example import example_chunk
from freshrec.join.rows import POSITION, SOURCE, Names, decode
from freshrec.join.state import Held, load_state, save_state

__all__ = ["Joiner"]

_REASONS = {kernel.BAD_TIME: "bad_time", kernel.MISSING_ID: "missing_id", kernel.LATE_IMPRESSION: "late_event",
            kernel.LATE_ACTION: "late_event", kernel.ORPHAN_ACTION: "orphan_action"}


class Joiner:
    """Joins impressions with their delayed actions (see the module doc); rejected rows go to
    `dead_letters` when given, and every outcome is counted in `stats`."""

    def __init__(self, config: JoinConfig | None = None, dead_letters: DeadLetterSink | None = None) -> None:
        self.config = config or JoinConfig()
        self.dead_letters = dead_letters
        self._names = Names()
        self._held = Held()

    @property
    def stats(self) -> JoinStats:
        """What became of every row so far (a copy)."""
        return JoinStats(*self._held.stats.tolist())

    @property
    def watermark(self) -> float:
        """Events with a ts below this are late."""
        return float(self._held.clock[kernel.WATERMARK])

    @property
    def pending(self) -> int:
        """Impressions held with no label yet."""
        return int(self._held.count[kernel.PENDING])

    @property
    def buffered(self) -> int:
        """Early actions waiting for their impression."""
        return int(self._held.count[kernel.BUFFERED])

    @property
    def memory(self) -> dict[str, int]:
        """What is held: impressions (labelled or not), stored rows, early actions."""
        h = self._held
        return {"impressions": int(h.count[kernel.HELD]), "rows": len(h.rows), "actions": self.buffered}

    @property
    def nbytes(self) -> int:
        """Bytes held: the kernel's arrays and the rows awaiting their label."""
        h = self._held
        return sum(a.nbytes for a in h.arrays()) + sum(part.nbytes for part in h.rows.parts)

    def process(self, chunk: EventChunk) -> EventChunk | None:
        """Take the rows of `chunk`; the examples that became final with them, or None."""
        rows, h, c = decode(chunk, self.config, self._names), self._held, self.config
        h.reserve(len(chunk))
        kernel.process(rows.codes, rows.ts, rows.keys, rows.kinds, rows.invalid, chunk.positions,
                       self._names.source(chunk.source), c.window, c.allowed_lateness, c.skew, c.max_pending,
                       *h.arrays())
        kept = h.kept[:h.count[kernel.KEPT]]
        h.rows.append(chunk, kept[:, 0], kept[:, 1])
        return self._finish()

    def advance(self, watermark: float) -> EventChunk | None:
        """Move the watermark up to `watermark` (never back): the examples that became final."""
        if math.isnan(watermark):
            raise ValueError("the watermark is NaN")
        self._held.reserve(0)
        kernel.advance(float(watermark), *self._held.arrays())
        return self._finish()

    def flush(self) -> EventChunk | None:
        """End of stream: close every window (as `advance(inf)`; later rows are all late)."""
        return self.advance(math.inf)

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint as numpy arrays and Arrow tables (see `freshrec.join.state`)."""
        return save_state(self._held, self._names, self.config)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of a joiner with the same config, exactly as it would have."""
        names = Names()
        self._held, self._names = load_state(state, self.config, names), names

    def _finish(self) -> EventChunk | None:
        """Dead-letter what the last kernel call rejected; the examples it made final, or None."""
        h = self._held
        if self.dead_letters is not None and h.count[kernel.DEAD]:
            self.dead_letters.put_many(self._letters(h.dead[:h.count[kernel.DEAD]]))
        out = h.out[:h.count[kernel.OUT]]
        if not len(out):
            return None
        rows = h.rows.take(out["rid"])
        positions = rows.column(POSITION).to_numpy()
        sources = rows.column(SOURCE)
        rows = rows.drop_columns([POSITION, SOURCE])
        return example_chunk(rows, positions, sources, out["label"].astype(np.float32), out["label_ts"],
                             self._names.kind_names(out["kind"]), self.config.name)

    def _letters(self, dead: np.ndarray) -> list[DeadLetter]:
        sources = self._names.source_names(dead["source"]).to_pylist()
        kinds = self._names.kind_names(dead["kind"]).to_pylist()
        keys = " or ".join(self.config.key_columns)
        letters = []
        for letter, source, kind in zip(dead.tolist(), sources, kinds, strict=True):
            reason, position, _, _, ts, watermark = letter
            if reason == kernel.BAD_TIME:
                detail = "ts is missing or not finite"
            elif reason == kernel.MISSING_ID:
                detail = f"no {keys}"
            elif reason == kernel.LATE_IMPRESSION:
                detail = f"impression at ts={ts} is below the watermark {watermark}"
            elif reason == kernel.LATE_ACTION:
                detail = f"{kind} at ts={ts} is below the watermark {watermark} and no impression is open for it"
            else:
                detail = f"no impression of its {keys} claimed this {kind} at ts={ts}"
            letters.append(DeadLetter(source, position, _REASONS[reason], detail))
        return letters
