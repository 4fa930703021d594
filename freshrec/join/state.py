"""What a `Joiner` holds between rows (`JoinState`), and its checkpoint as plain data.

`save_state` gives numpy arrays and Arrow tables only (no pickle): the held impressions and early
actions as tables of their key columns, ts, sequence numbers and flags, the rows of impressions
awaiting their label, the clock, the counters and the config it was made under. `load_state`
rebuilds the same state, heaps included (their order follows (deadline, sequence number), so it
is the same whatever the heaps' layout).

>>> from freshrec.join.config import JoinConfig
>>> config = JoinConfig(key="impression_id")
>>> state = JoinState(max_ts=9.0, watermark=3.0)
>>> hold(state, Impression(8.0, 0, "r1", 0), config.window)
>>> saved = save_state(state, JoinStats(impressions=1), config)
>>> sorted(saved)
['actions', 'clock', 'config', 'counters', 'impressions', 'rows', 'stats']
>>> saved["impressions"].to_pylist()
[{'key.impression_id': 'r1', 'ts': 8.0, 'seq': 0, 'rid': 0, 'positive': False}]
>>> state, stats = load_state(saved, config)
>>> state.closing[0][:2], state.pending, stats.impressions
((1808.0, 0), 1, 1)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import astuple, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from freshrec.join.config import JoinConfig, JoinStats
from freshrec.join.rows import RowStore

__all__ = ["Action", "Impression", "JoinState", "hold", "load_state", "save_state", "wait"]


class Impression:
    """A held impression: its ts, sequence number, key, row id in the store, and whether it is
    positive already (then its row is gone and it stays only to catch duplicates)."""

    __slots__ = ("ts", "seq", "key", "rid", "positive")

    def __init__(self, ts: float, seq: int, key: Hashable, rid: int, positive: bool = False) -> None:
        self.ts, self.seq, self.key, self.rid, self.positive = ts, seq, key, rid, positive


class Action:
    """An early action waiting for its impression; `alive` until claimed or expired."""

    __slots__ = ("ts", "seq", "key", "kind", "position", "source", "alive")

    def __init__(self, ts: float, seq: int, key: Hashable, kind: str, position: int, source: str) -> None:
        self.ts, self.seq, self.key, self.kind = ts, seq, key, kind
        self.position, self.source, self.alive = position, source, True


@dataclass
class JoinState:
    """Everything a joiner holds between rows. `held` counts the impressions held (`pending`
    of them still unlabelled), `buffered` the early actions alive."""

    impressions: dict[Hashable, list[Impression]] = field(default_factory=dict)
    closing: list = field(default_factory=list)  # heap of (window end, seq, Impression)
    early: dict[Hashable, list[Action]] = field(default_factory=dict)
    expiring: list = field(default_factory=list)  # heap of (ts + skew, seq, Action)
    rows: RowStore = field(default_factory=RowStore)
    max_ts: float = -math.inf
    watermark: float = -math.inf
    seq: int = 0
    rid: int = 0
    held: int = 0
    pending: int = 0
    buffered: int = 0
    out: list = field(default_factory=list)  # (rid, label, label_ts, action kind) in emission order


def hold(state: JoinState, impression: Impression, window: float) -> None:
    """Hold `impression` until its window (of `window` seconds) closes."""
    state.impressions.setdefault(impression.key, []).append(impression)
    heapq.heappush(state.closing, (impression.ts + window, impression.seq, impression))
    state.held += 1
    state.pending += not impression.positive


def wait(state: JoinState, action: Action, skew: float) -> None:
    """Buffer an early `action` until an impression claims it or the watermark passes it."""
    state.early.setdefault(action.key, []).append(action)
    heapq.heappush(state.expiring, (action.ts + skew, action.seq, action))
    state.buffered += 1


def _keys(keys: list, columns: tuple[str, ...]) -> dict[str, pa.Array]:
    if len(columns) == 1:
        return {f"key.{columns[0]}": pa.array(keys)}
    return {f"key.{c}": pa.array([key[j] for key in keys]) for j, c in enumerate(columns)}


def _unkeys(table: pa.Table, columns: tuple[str, ...]) -> list:
    parts = [table.column(f"key.{c}").to_pylist() for c in columns]
    return parts[0] if len(columns) == 1 else list(zip(*parts, strict=True))


def save_state(state: JoinState, stats: JoinStats, config: JoinConfig) -> dict[str, Any]:
    """The checkpoint of `state` (between chunks) as numpy arrays and Arrow tables."""
    held = sorted((i for group in state.impressions.values() for i in group), key=lambda i: i.seq)
    early = sorted((a for group in state.early.values() for a in group), key=lambda a: a.seq)
    columns = config.key_columns
    impressions = {**_keys([i.key for i in held], columns),
                   "ts": pa.array([i.ts for i in held], pa.float64()),
                   "seq": pa.array([i.seq for i in held], pa.int64()),
                   "rid": pa.array([i.rid for i in held], pa.int64()),
                   "positive": pa.array([i.positive for i in held], pa.bool_())}
    actions = {**_keys([a.key for a in early], columns),
               "ts": pa.array([a.ts for a in early], pa.float64()),
               "seq": pa.array([a.seq for a in early], pa.int64()),
               "kind": pa.array([a.kind for a in early], pa.string()),
               "position": pa.array([a.position for a in early], pa.int64()),
               "source": pa.array([a.source for a in early], pa.string())}
    return {"config": np.array(repr(config)),
            "clock": np.array([state.max_ts, state.watermark], np.float64),
            "counters": np.array([state.seq, state.rid], np.int64),
            "stats": np.array(astuple(stats), np.int64),
            "impressions": pa.table(impressions), "actions": pa.table(actions), "rows": state.rows.state()}


def load_state(saved: dict[str, Any], config: JoinConfig) -> tuple[JoinState, JoinStats]:
    """The state and counters that `save_state` saved under the same `config`."""
    if str(saved["config"]) != repr(config):
        raise ValueError(f"the state was saved under {saved['config']}, not {config!r}")
    state = JoinState()
    state.max_ts, state.watermark = (float(x) for x in saved["clock"])
    state.seq, state.rid = (int(x) for x in saved["counters"])
    table = saved["impressions"]
    for row in zip(table.column("ts").to_pylist(), table.column("seq").to_pylist(),
                   _unkeys(table, config.key_columns), table.column("rid").to_pylist(),
                   table.column("positive").to_pylist(), strict=True):
        hold(state, Impression(*row), config.window)
    table = saved["actions"]
    for row in zip(table.column("ts").to_pylist(), table.column("seq").to_pylist(),
                   _unkeys(table, config.key_columns), table.column("kind").to_pylist(),
                   table.column("position").to_pylist(), table.column("source").to_pylist(), strict=True):
        wait(state, Action(*row), config.skew)
    state.rows.load(saved["rows"])
    return state, JoinStats(*(int(x) for x in saved["stats"]))
