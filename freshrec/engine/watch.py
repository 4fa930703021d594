"""`LoopWatch`: what `freshrec run` reports about a running loop besides its progress: the trainer's
Prometheus figures (`TRAINING`) after each chunk, a Page-Hinkley test on each chunk's mean log loss,
and, every `interval` seconds in a thread of its own, a `Reading` for the `Alerts` (so a loop that
stalls is seen: its chunks stop coming, the thread does not).

>>> from freshrec.metrics.alerts import Alerts
>>> watch = LoopWatch(Alerts(stalled=60.0), clock=iter([0.0, 100.0]).__next__)
>>> watch.reading(), watch.reading().idle
(Reading(now=0.0, model_age=None, idle=0.0, waiting=True, window_auc=None, run_auc=None, drift=False, \
dead_letter_share=None), 100.0)
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

from freshrec.metrics.alerts import Alerts, PageHinkley, Reading
from freshrec.metrics.prometheus import TRAINING

__all__ = ["DRIFT_HOLD", "LoopWatch"]

DRIFT_HOLD = 300.0
"""Seconds the drift alert keeps firing after the Page-Hinkley test last fired."""
RECENT_CHUNKS = 20   # chunks whose records the dead-letter share counts


class LoopWatch:
    """Feeds `alerts` from the engine (`on_chunk`) and from `model_age()` (the served model's age, None
    while nothing is served); `dead_letters()`: records refused so far, by reason; `waiting()`: whether events wait
    to be learned (default: until `ended()` is called); `drift`: the Page-Hinkley test on chunks' loss."""

    def __init__(self, alerts: Alerts, model_age: Callable[[], float | None] = lambda: None,
                 dead_letters: Callable[[], Mapping[str, int]] = dict, waiting: Callable[[], bool] | None = None,
                 drift: PageHinkley | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.alerts, self.model_age, self.dead_letters, self.drift = alerts, model_age, dead_letters, drift
        self.interval, self.clock = interval, clock
        self._waiting, self._ended = waiting, False
        self._learned_at = None
        self._drift_at: float | None = None
        self._seen = {"learned": 0, "rows": 0, "loss": 0.0, "records": 0, "evicted": 0}
        self._letters: Counter = Counter()   # dead letters by reason, as last seen
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT_CHUNKS)   # (records, dead letters) a chunk
        self._auc: tuple[float | None, float | None] = (None, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_chunk(self, engine, summary) -> None:
        """After each chunk: the trainer's figures, the loss test, the dead letters."""
        now, seen = self.clock(), self._seen
        if engine.learned > seen["learned"]:
            TRAINING.learned.inc(engine.learned - seen["learned"])
            self._learned_at, seen["learned"] = now, engine.learned
        metrics = engine.trainer.metrics
        total, window = metrics.total, metrics.window()
        if total.rows > seen["rows"]:
            chunk_loss = (total.loss - seen["loss"]) / (total.rows - seen["rows"])
            if self.drift is not None and self.drift.update(chunk_loss):
                self._drift_at = now
            seen["rows"], seen["loss"] = total.rows, total.loss
        if window["auc"] is not None:
            TRAINING.window_auc.set(window["auc"])
            TRAINING.window_logloss.set(window["logloss"])
        self._auc = (window["auc"], metrics.summary()["auc"])
        model = engine.trainer.model
        TRAINING.rows.set(model.live_ids)
        if model.evicted_ids > seen["evicted"]:
            TRAINING.evicted.inc(model.evicted_ids - seen["evicted"])
            seen["evicted"] = model.evicted_ids
        letters = Counter(self.dead_letters())
        for reason, count in (letters - self._letters).items():
            TRAINING.dead_letters.labels(reason).inc(count)
        self._recent.append((summary.rows - seen["records"], letters.total() - self._letters.total()))
        self._letters, seen["records"] = letters, summary.rows

    def ended(self) -> None:
        """The stream has ended: no event waits any more (live events aside)."""
        self._ended = True

    def reading(self) -> Reading:
        """The loop's numbers now."""
        now = self.clock()
        if self._learned_at is None:
            self._learned_at = now   # idle counts from the start
        records = sum(r for r, _ in self._recent) + sum(d for _, d in self._recent)
        share = sum(d for _, d in self._recent) / records if records else None
        waiting = self._waiting() if self._waiting is not None else not self._ended
        drift = self._drift_at is not None and now - self._drift_at < DRIFT_HOLD
        return Reading(now, self.model_age(), now - self._learned_at, waiting, *self._auc, drift, share)

    def start(self) -> LoopWatch:
        """Evaluate the alerts every `interval` seconds until `stop()`."""
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.alerts.evaluate(self.reading())
        self._thread = threading.Thread(target=loop, name="loop-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
