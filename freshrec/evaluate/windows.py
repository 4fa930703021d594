"""AUC over windows of enough events, with a confidence band, for reports that stay readable on any
stream: a 20-year log of sparse days and a one-day burst both come out as about `TARGET` windows of
at least `MIN_EVENTS` events each (equal counts of events, not of days), each window's AUC with its
95 % band (Hanley & McNeil's standard error), the cumulative AUC at each window's end, and an arm's
gap to a reference arm per window (its band from the two errors: conservative, as the arms score the
same events).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> labels = rng.random(4000) < 0.3
>>> scores = np.clip(labels * 0.2 + rng.random(4000) * 0.8, 0, 1)
>>> bounds = window_bounds(4000, min_events=1000)
>>> [(b.start, b.stop) for b in bounds]
[(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000)]
>>> first = over_windows(scores, labels, np.arange(4000.0), bounds)[0]
>>> first["rows"], first["low"] < first["auc"] < first["high"], first["cumulative_auc"] == first["auc"]
(1000, True, True)
"""

from __future__ import annotations

import math

import numpy as np

from freshrec.metrics.streaming import auc

__all__ = ["MIN_EVENTS", "TARGET", "auc_band", "gaps", "over_windows", "window_bounds"]

TARGET = 40         # windows a report shows
MIN_EVENTS = 500    # the fewest events a window's AUC is taken over
Z95 = 1.959964


def window_bounds(rows: int, min_events: int = MIN_EVENTS, target: int = TARGET) -> list[slice]:
    """Consecutive windows of equal event counts covering `rows` events: `target` of them, fewer where
    each would hold less than `min_events` (one window at least); the last takes the remainder."""
    size = max(min_events, math.ceil(rows / target), 1)
    count = max(1, rows // size)
    starts = [k * size for k in range(count)]
    return [slice(start, starts[k + 1] if k + 1 < count else rows) for k, start in enumerate(starts)]


def auc_band(value: float, positives: int, negatives: int, z: float = Z95) -> tuple[float, float]:
    """The band of `value`, an AUC over `positives` and `negatives`: +- z standard errors (Hanley and
    McNeil 1982), clipped to [0, 1].

    >>> [round(x, 3) for x in auc_band(0.75, 100, 300)]
    [0.69, 0.81]
    """
    q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
    variance = (value * (1 - value) + (positives - 1) * (q1 - value * value)
                + (negatives - 1) * (q2 - value * value)) / (positives * negatives)
    error = z * math.sqrt(max(variance, 0.0))
    return max(0.0, value - error), min(1.0, value + error)


def over_windows(scores: np.ndarray, labels: np.ndarray, ts: np.ndarray, bounds: list[slice]) -> list[dict]:
    """Each window's event-time span, rows, AUC with its band and standard error (None without both
    classes), and the cumulative AUC of everything up to its end."""
    labels = np.asarray(labels, dtype=bool)
    out = []
    for window in bounds:
        y, p = labels[window], scores[window]
        positives, rows = int(y.sum()), len(y)
        entry = {"start_ts": float(ts[window][0]), "end_ts": float(ts[window][-1]), "rows": rows,
                 "auc": None, "low": None, "high": None, "se": None, "cumulative_auc": None}
        if 0 < positives < rows:
            value = auc(p, y)
            low, high = auc_band(value, positives, rows - positives)
            entry.update(auc=value, low=low, high=high, se=(high - low) / (2 * Z95))
        seen = labels[: window.stop]
        if 0 < seen.sum() < len(seen):
            entry["cumulative_auc"] = auc(scores[: window.stop], seen)
        out.append(entry)
    return out


def gaps(arm: list[dict], reference: list[dict]) -> list[dict]:
    """`arm`'s AUC minus `reference`'s in each window, with a 95 % band from both standard errors."""
    out = []
    for a, r in zip(arm, reference):
        if a["auc"] is None or r["auc"] is None:
            out.append({"end_ts": a["end_ts"], "gap": None, "low": None, "high": None})
            continue
        gap, error = a["auc"] - r["auc"], Z95 * math.hypot(a["se"], r["se"])
        out.append({"end_ts": a["end_ts"], "gap": gap, "low": gap - error, "high": gap + error})
    return out
