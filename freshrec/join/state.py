"""What a `Joiner` holds between rows (`Held`: the kernel's arrays), and its checkpoint as plain data.

`Held.reserve(n)` grows the arrays (doubling) so that a kernel call over `n` rows cannot run out of
room. `save_state` gives numpy arrays and Arrow tables only (no pickle): the held impressions and
early actions as tables (key hash, ts, sequence number, ...; kinds and sources by name), the rows
of impressions awaiting their label, the clock, the counters and the config it was made under.
`load_state` holds them again in sequence order, so the heaps pop in the same (deadline, sequence
number) order as before, whatever their layout.

>>> from freshrec.join.config import JoinConfig, JoinStats
>>> from freshrec.join.rows import Names
>>> config, names = JoinConfig(key="impression_id"), Names()
>>> held = Held()
>>> held.reserve(1)
>>> rows = (np.array([kernel.IMPRESSION]), np.array([8.0]), np.array([42]), np.array([0]),
...         np.zeros(1, np.int64), np.array([3]))
>>> kernel.process(*rows, names.source("log"), config.window, 0.0, 0.0, 10, *held.arrays())
>>> saved = save_state(held, names, config)
>>> sorted(saved)
['actions', 'clock', 'config', 'counters', 'impressions', 'rows', 'stats']
>>> saved["impressions"].to_pylist()
[{'key': 42, 'ts': 8.0, 'seq': 0, 'rid': 0, 'positive': False}]
>>> again = load_state(saved, config, Names())
>>> again.closing[0].tolist(), int(again.count[kernel.PENDING]), int(again.stats[kernel.IMPRESSIONS])
((1808.0, 0, 0), 1, 1)
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa

from freshrec.join import kernel
from freshrec.join.config import JoinConfig, JoinStats
from freshrec.join.rows import Names, RowStore

__all__ = ["Held", "load_state", "save_state"]

_STATS = len(fields(JoinStats))   # the kernel counts them in this order


class Held:
    """The kernel's arrays (see `freshrec.join.kernel`) and the rows of unlabelled impressions."""

    def __init__(self) -> None:
        self.imps = np.zeros(0, kernel.IMPRESSION_SLOT)
        self.acts = np.zeros(0, kernel.ACTION_SLOT)
        self.table = np.zeros(16, kernel.KEY_ENTRY)
        self.closing = np.zeros(0, kernel.HEAP)
        self.expiring = np.zeros(0, kernel.HEAP)
        self.out = np.zeros(0, kernel.EXAMPLE)
        self.dead = np.zeros(0, kernel.DEAD_LETTER)
        self.kept = np.zeros((0, 2), np.int64)
        self.clock = np.array([-np.inf, -np.inf])
        self.count = np.zeros(kernel.N_COUNTS, np.int64)
        self.count[kernel.ACT_FREE] = -1
        self.stats = np.zeros(_STATS, np.int64)
        self.rows = RowStore()

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The state arguments of `kernel.process` and `kernel.advance`, in order."""
        return (self.imps, self.acts, self.table, self.closing, self.expiring, self.out, self.dead,
                self.kept, self.clock, self.count, self.stats)

    def reserve(self, rows: int) -> None:
        """Room for a call over `rows` rows; clears what the last call produced."""
        c = self.count
        c[[kernel.OUT, kernel.DEAD, kernel.KEPT]] = 0
        if len(self.imps) < 2 * (c[kernel.HELD] + rows):   # the ring at most half full
            size = len(self.imps)
            self.imps = _room(self.imps, 2 * (c[kernel.HELD] + rows))
            self.imps["seq"][size:] = -1
        self.acts = _room(self.acts, c[kernel.ACT_TOP] + rows)
        self.closing = _room(self.closing, c[kernel.CLOSING] + rows)
        self.expiring = _room(self.expiring, c[kernel.EXPIRING] + rows)
        self.out = _room(self.out, c[kernel.HELD] + rows)
        self.dead = _room(self.dead, c[kernel.BUFFERED] + rows)
        if len(self.kept) < rows:
            self.kept = np.zeros((_grown(len(self.kept), rows), 2), np.int64)
        if 2 * (c[kernel.KEYS] + rows) > len(self.table):
            table = np.zeros(_grown(len(self.table), 2 * (c[kernel.KEYS] + rows)), kernel.KEY_ENTRY)
            kernel.rehash(self.table, table)
            self.table = table


def _grown(size: int, need: int) -> int:
    """The power of two at least 16, `need` and twice `size`."""
    return 1 << (max(16, int(need), 2 * size) - 1).bit_length()


def _room(array: np.ndarray, need: int) -> np.ndarray:
    if len(array) >= need:
        return array
    grown = np.zeros(_grown(len(array), need), array.dtype)
    grown[:len(array)] = array
    return grown


def _living(slots: np.ndarray, top: int) -> np.ndarray:
    """The slots in use (seq >= 0) below `top`, in sequence order."""
    used = slots[:top][slots["seq"][:top] >= 0]
    return used[np.argsort(used["seq"], kind="stable")]


def save_state(held: Held, names: Names, config: JoinConfig) -> dict[str, Any]:
    """The checkpoint of `held` (between chunks) as numpy arrays and Arrow tables."""
    imps = _living(held.imps, len(held.imps))
    acts = _living(held.acts, int(held.count[kernel.ACT_TOP]))
    impressions = pa.table({"key": imps["key"], "ts": imps["ts"], "seq": imps["seq"], "rid": imps["rid"],
                            "positive": imps["positive"]})
    actions = pa.table({"key": acts["key"], "ts": acts["ts"], "seq": acts["seq"],
                        "kind": names.kind_names(acts["kind"]), "position": acts["position"],
                        "source": names.source_names(acts["source"])})
    return {"config": np.array(repr(config)),
            "clock": held.clock.copy(),
            "counters": held.count[[kernel.SEQ, kernel.RID]].copy(),
            "stats": held.stats.copy(),
            "impressions": impressions, "actions": actions, "rows": held.rows.state()}


def load_state(saved: dict[str, Any], config: JoinConfig, names: Names) -> Held:
    """What `save_state` saved under the same `config` (kind and source names into `names`)."""
    if str(saved["config"]) != repr(config):
        raise ValueError(f"the state was saved under {saved['config']}, not {config!r}")
    if "key" not in saved["impressions"].column_names:
        raise ValueError("the state holds raw join keys (a joiner before key hashing): it cannot be continued; "
                         "start the join from an empty state")
    held = Held()
    held.clock[:] = saved["clock"]
    held.count[[kernel.SEQ, kernel.RID]] = saved["counters"]
    held.stats[:] = saved["stats"]
    table = saved["impressions"]
    imps = np.zeros(table.num_rows, kernel.IMPRESSION_SLOT)
    for name in ("key", "ts", "seq", "rid", "positive"):
        imps[name] = table.column(name).to_numpy()
    table = saved["actions"]
    acts = np.zeros(table.num_rows, kernel.ACTION_SLOT)
    for name in ("key", "ts", "seq", "position"):
        acts[name] = table.column(name).to_numpy()
    acts["kind"] = names.kinds(table.column("kind"))
    acts["source"] = [names.source(s) for s in table.column("source").to_pylist()]
    held.reserve(len(imps) + len(acts))
    kernel.restore(imps, acts, config.window, config.skew, held.imps, held.acts, held.table, held.closing,
                   held.expiring, held.count)
    held.rows.load(saved["rows"])
    return held
