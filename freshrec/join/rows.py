"""The joiner's Arrow plumbing: `decode` reads what the join needs from a chunk in one pass per
column, and `RowStore` keeps the rows of impressions awaiting their label.

`decode` sorts every row into a code: an impression, an action that counts for the label rule, or
an action that does not. The kind comes from the row's `kind` column, else from the chunk's kind.
A ts that is missing or not finite reads as None, and so does a key with a null part.

>>> import numpy as np, pyarrow as pa
>>> from freshrec.events.event import EventChunk
>>> from freshrec.join.config import JoinConfig
>>> table = pa.table({"ts": [1.0, 2.0, 3.0, float("nan")], "user_id": ["u", "u", None, "u"],
...                   "item_id": ["a", "a", "b", "a"], "kind": ["impression", "click", "like", "click"]})
>>> rows = decode(EventChunk(table, np.arange(4), "log"), JoinConfig())
>>> rows.codes, rows.ts, rows.keys
([0, 1, 2, 1], [1.0, 2.0, 3.0, None], [('u', 'a'), ('u', 'a'), None, ('u', 'a')])
>>> store = RowStore()
>>> store.append(EventChunk(table, np.arange(4) + 10, "log"), [0, 2], [5, 6])
>>> store.take(np.array([6])).to_pylist()
[{'ts': 3.0, 'user_id': None, 'item_id': 'b', '_position': 12, '_source': 'log'}]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.event import TS, EventChunk
from freshrec.join.config import JoinConfig

__all__ = ["ACTION", "IGNORED", "IMPRESSION", "POSITION", "SOURCE", "Decoded", "RowStore",
           "decode"]

KIND = "kind"
IMPRESSION, ACTION, IGNORED = 0, 1, 2
POSITION, SOURCE = "_position", "_source"


@dataclass(frozen=True)
class Decoded:
    """Per row, as Python lists for the join loop: code, ts, key, kind."""

    codes: list[int]
    ts: list[float]
    keys: list
    kinds: list[str]


def _counts(kinds: pa.Array, table: pa.Table, config: JoinConfig) -> np.ndarray:
    """Whether each row is an action the label rule counts."""
    counts = pc.is_in(kinds, value_set=pa.array(config.positive_kinds, pa.string()))
    for kind, column, minimum in config.thresholds:
        if column in table.column_names:
            enough = pc.fill_null(pc.greater_equal(table.column(column), minimum), False)
        else:
            enough = pa.repeat(False, table.num_rows)
        counts = pc.and_(counts, pc.or_(pc.not_equal(kinds, kind), enough))
    return counts.to_numpy(zero_copy_only=False)


def _keys(table: pa.Table, config: JoinConfig, source: str) -> list:
    missing = [c for c in config.key_columns if c not in table.column_names]
    if missing:
        raise ValueError(f"chunk from {source!r} has no column {missing[0]!r} (JoinConfig.key)")
    parts = [table.column(c).to_pylist() for c in config.key_columns]
    if len(parts) == 1:
        return parts[0]
    return [None if None in key else key for key in zip(*parts, strict=True)]


def decode(chunk: EventChunk, config: JoinConfig) -> Decoded:
    """What the join loop reads of `chunk`."""
    table, n = chunk.table, len(chunk)
    if KIND in table.column_names:
        kinds = pc.fill_null(pc.cast(chunk.column(KIND), pa.string()), chunk.kind)
    else:
        kinds = pa.repeat(pa.scalar(chunk.kind, pa.string()), n)
    ts = pc.cast(chunk.column(TS), pa.float64()).to_numpy(zero_copy_only=False)
    impression = pc.equal(kinds, config.impression_kind).to_numpy(zero_copy_only=False)
    codes = np.where(impression, IMPRESSION, np.where(_counts(kinds, table, config), ACTION, IGNORED))
    times = ts.astype(object)
    times[~np.isfinite(ts)] = None
    return Decoded(codes.tolist(), times.tolist(), _keys(table, config, chunk.source), kinds.to_pylist())


class RowStore:
    """Rows of impressions awaiting their label, each under a row id (ids ascend as rows are
    appended). A row taken out is dead; dead rows are dropped once they outnumber the living, so
    the store holds at most about twice the pending impressions (plus one chunk's)."""

    def __init__(self) -> None:
        self.table: pa.Table | None = None
        self.rids = np.empty(0, np.int64)
        self.dead = np.empty(0, bool)
        self.n_dead = 0

    def __len__(self) -> int:
        return len(self.rids)

    def append(self, chunk: EventChunk, indices: list[int], rids: list[int]) -> None:
        """Keep rows `indices` of `chunk` (less its `kind` column) under `rids`, with their position
        and source."""
        if not indices:
            return
        rows = chunk.table.take(pa.array(indices, pa.int64()))
        if KIND in rows.column_names:
            rows = rows.drop_columns([KIND])
        rows = rows.append_column(POSITION, pa.array(chunk.positions[indices], pa.int64()))
        rows = rows.append_column(SOURCE, pa.repeat(pa.scalar(chunk.source, pa.string()), len(indices)))
        self._extend(rows, np.asarray(rids, np.int64))

    def _extend(self, rows: pa.Table, rids: np.ndarray) -> None:
        if self.table is None:
            self.table = rows
        else:
            self.table = pa.concat_tables([self.table, rows], promote_options="default")
        self.rids = np.concatenate([self.rids, rids])
        self.dead = np.concatenate([self.dead, np.zeros(len(rids), bool)])

    def take(self, rids: np.ndarray) -> pa.Table:
        """The rows of `rids` (held, each once), in that order; they die."""
        index = np.searchsorted(self.rids, rids)
        rows = self.table.take(pa.array(index, pa.int64()))
        self.dead[index] = True
        self.n_dead += len(index)
        if 2 * self.n_dead > len(self.rids):
            self.compact()
        return rows

    def compact(self) -> None:
        """Drop the dead rows."""
        if self.n_dead:
            keep = ~self.dead
            self.table = self.table.filter(pa.array(keep)).combine_chunks()
            self.rids, self.dead, self.n_dead = self.rids[keep], self.dead[keep], 0

    def state(self) -> pa.Table:
        """The living rows with their ids (column "_rid")."""
        self.compact()
        if self.table is None:
            return pa.table({"_rid": pa.array([], pa.int64())})
        return self.table.append_column("_rid", pa.array(self.rids, pa.int64()))

    def load(self, state: pa.Table) -> None:
        """Hold the rows of `state()` (into an empty store)."""
        if state.num_rows:
            rids = state.column("_rid").to_numpy()
            self._extend(state.drop_columns(["_rid"]), rids)
