"""A simulated impression/click stream with the troubles of a real one, for the joiner's tests and
`bench/join.py`: delayed clicks (some past the window), doubled clicks, re-delivered impressions,
orphan clicks, disorder and late arrivals.

>>> events = impression_stream(1000, seed=0)
>>> events.table.column_names, len(events) > 1000
(['ts', 'user_id', 'item_id', 'kind', 'impression_id'], True)
>>> sorted(set(events.table.column("kind").to_pylist()))
['click', 'impression']
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from freshrec.events.event import EventChunk

__all__ = ["impression_stream"]


def impression_stream(n: int, seed: int = 0, rate: float = 100.0, ctr: float = 0.1, late: float = 0.0,
                      delay: float = 20.0, disorder: float = 4.0, lateness: float = 100.0) -> EventChunk:
    """About `n` impressions at `rate` per second (ids 0, 1, ...; user = id % 997, item = id %
    101), each clicked with probability `ctr` after an exponential delay (mean `delay` seconds);
    5 % of clicks doubled a second later, 1 % of impressions delivered twice, n / 50 orphan clicks
    (ids -1, -2, ...). Rows arrive in the order of their ts plus up to `disorder` seconds, and a
    fraction `late` of them `lateness` seconds later still. Positions 0, 1, ... in arrival order."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    ids = np.arange(n)
    clicked = ids[rng.random(n) < ctr]
    click_ts = ts[clicked] + rng.exponential(delay, len(clicked))
    twice = rng.random(len(clicked)) < 0.05
    again = ids[rng.random(n) < 0.01]
    orphans = rng.random(n // 50) * ts[-1]
    all_ts = np.concatenate([ts, ts[again], click_ts, click_ts[twice] + 1.0, orphans])
    all_ids = np.concatenate([ids, again, clicked, clicked[twice], -1 - np.arange(len(orphans))])
    impressions = n + len(again)
    arrival = all_ts + rng.uniform(0.0, disorder, len(all_ts)) + lateness * (rng.random(len(all_ts)) < late)
    order = np.argsort(arrival, kind="stable")
    kind = pa.DictionaryArray.from_arrays((order >= impressions).astype(np.int8), ["impression", "click"])
    table = pa.table({"ts": all_ts[order], "user_id": (all_ids[order] % 997).astype(np.int64),
                      "item_id": (all_ids[order] % 101).astype(np.int64), "kind": kind.cast(pa.string()),
                      "impression_id": all_ids[order].astype(np.int64)})
    return EventChunk(table, np.arange(len(all_ts), dtype=np.int64), "sim")
