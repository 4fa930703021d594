"""Prequential metrics in bounded memory: AUC, logloss, NE and calibration, overall, over a
sliding window of events or event time, and over the tail of the stream.

Each scored row lands in a score histogram (negatives and positives per bin) and two running
sums (predictions, log losses). Everything is a sum of such tallies, so a window is the sum of a
few recent blocks and a tail is the running total minus an earlier copy of it; nothing grows
with the length of the stream.

>>> import numpy as np
>>> m = PrequentialMetrics(window_events=1_000)
>>> rng = np.random.default_rng(0)
>>> for _ in range(10):
...     p = rng.random(500)
...     m.update(p, rng.random(500) < p)
>>> s = m.summary()
>>> s["rows"], round(s["auc"], 2), round(s["calibration"], 2)
(5000, 0.84, 1.0)
>>> m.window()["rows"], m.tail(0.2)["rows"]
(1000, 1000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-7
"""Probabilities are clipped to [EPS, 1 - EPS] for the log loss and the score bins."""

_LOGIT_RANGE = math.log((1 - EPS) / EPS)  # about 16.1: the logit of the clipped extremes
_WINDOW_BLOCKS = 64
_EMPTY = dict.fromkeys(("auc", "logloss", "ne", "calibration", "mean_prediction", "observed_rate"))


def _rows(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, boolean labels) of the rows whose label is not NaN, and that row mask."""
    p = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{len(p)} scores for {len(y)} labels")
    mask = ~np.isnan(y)
    p, y = p[mask], y[mask]
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0, 1 or NaN (ignored)")
    return p, y == 1, mask


def _labelled(probs, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_rows`, with the scores checked to be probabilities."""
    p, y, mask = _rows(probs, labels)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    return p, y, mask


def _row_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row log loss with the probabilities clipped to [EPS, 1 - EPS]."""
    p = np.clip(p, EPS, 1 - EPS)
    return -np.where(y, np.log(p), np.log1p(-p))


def score_bins(probs: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each probability: bins uniform in logit space over the clipped range.

    Logit bins are narrow where click models put their scores (near 0) and still separate
    scores near 1; with 4096 bins each spans 0.008 in logit, 0.002 in probability at 0.5.

    >>> score_bins(np.array([0.0, 0.5, 1.0]), 4096).tolist()
    [0, 2048, 4095]
    """
    p = np.clip(probs, EPS, 1 - EPS)
    z = np.log(p) - np.log1p(-p)
    at = np.floor((z + _LOGIT_RANGE) * (bins / (2 * _LOGIT_RANGE))).astype(np.int64)
    return np.clip(at, 0, bins - 1)


def auc(probs, labels) -> float:
    """Exact ROC AUC from ranks, tied scores counting half; NaN labels ignored; NaN if a class is
    missing. Scores may be any real numbers (probabilities or logits).

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auc([0.5, 0.5, 0.2], [1, 0, float("nan")])
    0.5
    """
    p, y, _ = _rows(probs, labels)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2
    rank_sum = mid_rank[inverse.ravel()][y].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def logloss(probs, labels) -> float:
    """Mean log loss, probabilities clipped to [1e-7, 1 - 1e-7]; NaN labels ignored; NaN if empty.

    >>> round(logloss([0.9, 0.2], [1, 0]), 6)  # -(ln 0.9 + ln 0.8) / 2
    0.164252
    """
    p, y, _ = _labelled(probs, labels)
    return float(_row_loss(p, y).mean()) if len(p) else math.nan


@dataclass
class Tally:
    """A mergeable summary of scored rows: per-bin counts (row 0 negatives, row 1 positives) and
    the sums of the predictions and of the log losses."""

    counts: np.ndarray
    pred: float = 0.0
    loss: float = 0.0

    @classmethod
    def zeros(cls, bins: int) -> Tally:
        return cls(np.zeros((2, bins), np.int64))

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def add(self, other: Tally) -> None:
        """Add `other` into this tally, in place."""
        self.counts += other.counts
        self.pred += other.pred
        self.loss += other.loss

    def minus(self, other: Tally) -> Tally:
        """The rows of this tally that `other` (an earlier copy of it) did not hold."""
        return Tally(self.counts - other.counts, self.pred - other.pred, self.loss - other.loss)

    def copy(self) -> Tally:
        return Tally(self.counts.copy(), self.pred, self.loss)

    def report(self) -> dict:
        """rows, positives, auc, logloss, ne, calibration, mean_prediction, observed_rate; the
        figures a tally cannot define (no rows, one class only) are None.

        >>> t = Tally(np.array([[0, 3, 1], [0, 1, 3]]), pred=4.0, loss=5.0)
        >>> r = t.report()  # bin 2: 3 positives beat 3 negatives, tie 1; bin 1: 1 ties 3
        >>> r["auc"], (3 * 3.5 + 1 * 1.5) / 16, r["observed_rate"], r["calibration"]
        (0.75, 0.75, 0.5, 1.0)
        """
        rows, positives = self.rows, int(self.counts[1].sum())
        if rows == 0:
            return {"rows": 0, "positives": 0, **_EMPTY}
        rate, mean_loss = positives / rows, self.loss / rows
        mixed = 0 < positives < rows
        entropy = -(rate * math.log(rate) + (1 - rate) * math.log1p(-rate)) if mixed else None
        return {
            "rows": rows,
            "positives": positives,
            "auc": _binned_auc(self.counts) if mixed else None,
            "logloss": mean_loss,
            "ne": mean_loss / entropy if mixed else None,
            "calibration": self.pred / positives if positives else None,
            "mean_prediction": self.pred / rows,
            "observed_rate": rate,
        }


def _binned_auc(counts: np.ndarray) -> float:
    """AUC of a score histogram: each positive beats the negatives of lower bins, ties half."""
    negatives, positives = counts.astype(np.float64)
    below = np.cumsum(negatives) - negatives
    wins = np.dot(positives, below + 0.5 * negatives)
    return float(wins / (positives.sum() * negatives.sum()))


def _tallies(slots: np.ndarray, n: int, at: np.ndarray, y: np.ndarray, p: np.ndarray,
             loss: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per slot 0..n-1 of the rows (slot, bin `at`, label, prediction, loss): the counts
    (n, 2, bins) and the sums of predictions and losses (n, 2)."""
    counts = np.bincount((slots * 2 + y) * bins + at, minlength=n * 2 * bins)
    preds = np.bincount(slots, weights=p, minlength=n)
    losses = np.bincount(slots, weights=loss, minlength=n)
    return counts.reshape(n, 2, bins), np.stack([preds, losses], axis=1)


class _Store:
    """A fixed number of tallies in arrays allocated once."""

    def __init__(self, size: int, bins: int):
        self.counts = np.zeros((size, 2, bins), np.int64)
        self.sums = np.zeros((size, 2))

    def tally(self, which) -> Tally:
        """The sum of the tallies selected by `which` (an index or a mask)."""
        pred, loss = self.sums[which].reshape(-1, 2).sum(axis=0)
        return Tally(self.counts[which].reshape(-1, *self.counts.shape[1:]).sum(axis=0),
                     float(pred), float(loss))

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.sums.nbytes


class PrequentialMetrics:
    """Streaming metrics of predict-then-learn scores, overall, windowed and over the tail.

    - `bins`: score bins of the AUC histogram (uniform in logit, see `score_bins`); the binned
      AUC differs from the exact one only through pairs tied within a bin.
    - `window_events` / `window_seconds`: `window()` covers the last that many labelled events,
      or that many seconds of event time (`ts`) back from the latest `ts` seen;
      `window_seconds`, when set, takes precedence; with neither, `window()` is `summary()`.
      The window is kept as a ring of 65 blocks of 1/64 of its length each (in events or
      seconds), so it is exact to within one block: it covers no more than its length and
      misses at most 1/64 of it at the old end; its figures report the rows it covered. A late
      event (event time) joins the block of its time, or counts only overall if that has gone.
    - `checkpoints` (at least 2): copies of the running totals kept for `tail()`, taken at
      batch ends every so many rows and evenly thinned when full (every other one dropped, the
      spacing doubled), so they lie at most about 2/`checkpoints` of the stream (or a batch)
      apart and a tail starts within that of where it was asked to (1/64 to 1/32 of the
      stream with the default 64); its figures report the rows it covered.

    Every array is allocated here, once: memory does not depend on the stream (`nbytes`).
    """

    def __init__(self, bins: int = 4096, window_events: int | None = 100_000,
                 window_seconds: float | None = None, checkpoints: int = 64):
        if checkpoints < 2:
            raise ValueError(f"checkpoints must be at least 2, got {checkpoints}")
        for name, length in (("window_events", window_events), ("window_seconds", window_seconds)):
            if length is not None and not length > 0:
                raise ValueError(f"{name} must be positive, got {length}")
        self.bins = bins
        self.window_events = window_events
        self.window_seconds = window_seconds
        self.checkpoints = checkpoints
        self._total = Tally.zeros(bins)
        self._ring = _Store(_WINDOW_BLOCKS + 1, bins)
        self._slot = np.full(_WINDOW_BLOCKS + 1, np.iinfo(np.int64).min)  # block held per place
        self._first = 0  # the oldest block in the window
        self._clock = -math.inf  # labelled events seen, or the latest event time
        self._marks = _Store(checkpoints, bins)
        self._mark_rows = np.zeros(checkpoints, np.int64)
        self._marked = 1  # the first checkpoint: the empty stream
        self._mark_every = 1

    def update(self, probs: np.ndarray, labels: np.ndarray, ts: np.ndarray | None = None) -> None:
        """Add a micro-batch of scored rows: probabilities, 0/1 labels (NaN: ignored) and, for a
        window over event time, each row's event time in seconds."""
        p, y, mask = _labelled(probs, labels)
        if self.window_seconds is not None:
            if ts is None:
                raise ValueError("window_seconds needs event times: pass ts")
            ts = np.asarray(ts, dtype=np.float64).ravel()[mask]
            if not np.all(np.isfinite(ts)):
                raise ValueError("event times must be finite")
        rows = (score_bins(p, self.bins), y, p, _row_loss(p, y))
        ordinal = self._total.rows
        counts, sums = _tallies(np.zeros(len(p), np.int64), 1, *rows, self.bins)
        self._total.add(Tally(counts[0], float(sums[0, 0]), float(sums[0, 1])))
        if self.window_seconds is not None and len(p):
            self._slide(ts, float(ts.max()), self.window_seconds, rows)
        elif self.window_events is not None and len(p):
            events = np.arange(ordinal, ordinal + len(p), dtype=np.float64)
            self._slide(events, float(ordinal + len(p)), self.window_events, rows)
        self._mark()

    def _slide(self, x: np.ndarray, end: float, length: float, rows: tuple) -> None:
        """Move the window's end to `end`, and add the rows at positions `x` still inside it to
        their blocks (block b holds positions [b, b + 1) * length / 64)."""
        self._clock = max(self._clock, end)
        span = length / _WINDOW_BLOCKS
        last = math.floor(self._clock / span)
        self._first = max(math.ceil((self._clock - length) / span), last - _WINDOW_BLOCKS)
        slots = np.floor(x / span).astype(np.int64)
        keep = slots >= self._first
        if not keep.any():
            return
        low = int(slots[keep].min())
        blocks = np.arange(low, int(slots[keep].max()) + 1)
        counts, sums = _tallies(slots[keep] - low, len(blocks),
                                *(column[keep] for column in rows), self.bins)
        for block, block_counts, block_sums in zip(blocks.tolist(), counts, sums):
            place = block % len(self._slot)
            if self._slot[place] != block:
                self._slot[place] = block
                self._ring.counts[place], self._ring.sums[place] = 0, 0
            self._ring.counts[place] += block_counts
            self._ring.sums[place] += block_sums

    def _mark(self) -> None:
        """Copy the totals when enough rows came since the last copy; thin the copies when full."""
        rows = self._total.rows
        if rows - self._mark_rows[self._marked - 1] < self._mark_every:
            return
        if self._marked == self.checkpoints:
            kept = slice(0, self._marked, 2)
            self._marked = len(range(0, self._marked, 2))
            for array in (self._marks.counts, self._marks.sums, self._mark_rows):
                array[:self._marked] = array[kept].copy()
            self._mark_every = max(2 * self._mark_every, -(-rows // self._marked))
        self._marks.counts[self._marked] = self._total.counts
        self._marks.sums[self._marked] = self._total.pred, self._total.loss
        self._mark_rows[self._marked] = rows
        self._marked += 1

    @property
    def total(self) -> Tally:
        """A copy of the tally of every row seen (tallies add up: ranks' metrics merge)."""
        return self._total.copy()

    def summary(self) -> dict:
        """The figures over every row seen."""
        return self._total.report()

    def window(self) -> dict:
        """The figures over the sliding window (see the class docstring)."""
        if self.window_seconds is None and self.window_events is None:
            return self.summary()
        return self._ring.tally(self._slot >= self._first).report()

    def tail(self, fraction: float = 0.2) -> dict:
        """The figures over about the last `fraction` of the rows: from the checkpoint nearest to
        where that tail starts (`rows` says how many it covered)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        start = self._total.rows * (1 - fraction)
        nearest = int(np.argmin(np.abs(self._mark_rows[:self._marked] - start)))
        return self._total.minus(self._marks.tally(nearest)).report()

    @property
    def nbytes(self) -> int:
        """Bytes of state: about (66 + checkpoints) * 2 * bins * 8, whatever the stream."""
        arrays = (self._total.counts, self._slot, self._mark_rows)
        return self._ring.nbytes + self._marks.nbytes + sum(a.nbytes for a in arrays)
