"""The joiner's Arrow plumbing: `decode` reads what the kernel needs from a chunk, column by
column, `Names` gives kinds and sources their small integer codes, and `RowStore` keeps the rows
of impressions awaiting their label.

`decode` sorts every row into a code: an impression, an action that counts for the label rule, or
an action that does not. The kind comes from the row's `kind` column, else from the chunk's kind.
The key is one 64-bit hash of the key columns (`freshrec._hashing`, each column salted by its
name; "42" and 42 are one key). A row is invalid when its ts is missing or not finite
(`BAD_TIME`), else when a part of its key is null (`MISSING_ID`); `invalid` holds that reason + 1.

Two distinct keys share a hash with probability about 2^-63 per pair held at once (a million keys
held: about 1e-7 that any two collide); they would then join as one key.

>>> import numpy as np, pyarrow as pa
>>> from freshrec.events.event import EventChunk
>>> from freshrec.join.config import JoinConfig
>>> table = pa.table({"ts": [1.0, 2.0, 3.0, float("nan")], "user_id": ["u", "u", None, "u"],
...                   "item_id": ["a", "a", "b", "a"], "kind": ["impression", "click", "like", "click"]})
>>> names = Names()
>>> rows = decode(EventChunk(table, np.arange(4), "log"), JoinConfig(), names)
>>> rows.codes.tolist(), rows.invalid.tolist(), bool(rows.keys[0] == rows.keys[1] != rows.keys[2])
([0, 1, 2, 1], [0, 0, 2, 1], True)
>>> names.kind_names(rows.kinds).to_pylist()
['impression', 'click', 'like', 'click']
>>> store = RowStore()
>>> store.append(EventChunk(table, np.arange(4) + 10, "log"), np.array([0, 2]), np.array([5, 6]))
>>> store.take(np.array([6])).to_pylist()
[{'ts': 3.0, 'user_id': None, 'item_id': 'b', '_position': 12, '_source': 'log'}]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec._hashing import field_salt, hash_values
from freshrec.events.event import TS, EventChunk
from freshrec.join.config import JoinConfig
from freshrec.join.kernel import ACTION, BAD_TIME, IGNORED, IMPRESSION, MISSING_ID

__all__ = ["POSITION", "SOURCE", "Decoded", "Names", "RowStore", "decode"]

KIND = "kind"
POSITION, SOURCE = "_position", "_source"
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Decoded:
    """Per row, as numpy arrays for the kernel: code, ts, key hash, kind code, invalid reason + 1."""

    codes: np.ndarray
    ts: np.ndarray
    keys: np.ndarray
    kinds: np.ndarray
    invalid: np.ndarray


class Names:
    """Kind and source names as small integer codes (in order of first sight; -1 is no kind)."""

    def __init__(self) -> None:
        self._kinds: dict[str, int] = {}
        self._sources: dict[str, int] = {}

    def kinds(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The codes of a string array without nulls."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        codes = np.array([self._kinds.setdefault(k, len(self._kinds)) for k in encoded.dictionary.to_pylist()],
                         np.int64)
        return codes[encoded.indices.to_numpy(zero_copy_only=False)] if len(codes) else np.zeros(0, np.int64)

    def kind_names(self, codes: np.ndarray) -> pa.Array:
        """The names of kind `codes` (null for -1)."""
        return pa.array(list(self._kinds), pa.string()).take(pa.array(codes, pa.int64(), mask=codes < 0))

    def source(self, name: str) -> int:
        return self._sources.setdefault(name, len(self._sources))

    def source_names(self, codes: np.ndarray) -> pa.Array:
        return pa.array(list(self._sources), pa.string()).take(pa.array(codes, pa.int64()))


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


def _keys(table: pa.Table, config: JoinConfig, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The key hash of each row, and whether a part of it is null."""
    missing = [c for c in config.key_columns if c not in table.column_names]
    if missing:
        raise ValueError(f"chunk from {source!r} has no column {missing[0]!r} (JoinConfig.key)")
    keys = np.zeros(table.num_rows, np.uint64)
    null = np.zeros(table.num_rows, bool)
    for name in config.key_columns:
        column = table.column(name)
        keys = keys * _MIX + hash_values(column, field_salt(name)).view(np.uint64)
        if column.null_count:
            null |= column.is_null().to_numpy(zero_copy_only=False)
    keys = keys.view(np.int64)
    keys[keys == 0] = 1   # 0 marks an empty slot in the kernel's key table
    return keys, null


def decode(chunk: EventChunk, config: JoinConfig, names: Names) -> Decoded:
    """What the kernel reads of `chunk`."""
    table, n = chunk.table, len(chunk)
    if KIND in table.column_names:
        kinds = pc.fill_null(pc.cast(chunk.column(KIND), pa.string()), chunk.kind)
    else:
        kinds = pa.repeat(pa.scalar(chunk.kind, pa.string()), n)
    ts = pc.cast(chunk.column(TS), pa.float64()).to_numpy(zero_copy_only=False)
    impression = pc.equal(kinds, config.impression_kind).to_numpy(zero_copy_only=False)
    codes = np.where(impression, IMPRESSION, np.where(_counts(kinds, table, config), ACTION, IGNORED))
    keys, null = _keys(table, config, chunk.source)
    invalid = np.where(~np.isfinite(ts), BAD_TIME + 1, np.where(null, MISSING_ID + 1, 0))
    return Decoded(codes.astype(np.int64), ts, keys, names.kinds(kinds),
                   invalid.astype(np.int64))


class RowStore:
    """Rows of impressions awaiting their label, each under a row id, kept as the parts they were
    appended in (one per chunk; ids ascend from part to part). A row taken out is dead; a part goes
    once all its rows are dead, so the store holds the parts that still have a row awaiting its
    label: about the impressions of the last window + lateness, in whole chunks."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rids: list[np.ndarray] = []     # per part, ascending
        self.dead: list[np.ndarray] = []     # per part, bool
        self.first = np.empty(0, np.int64)   # per part, its first row id
        self.alive = np.empty(0, np.int64)   # per part, rows not taken yet
        self._table: pa.Table | None = None  # the parts as one (chunked) table

    def __len__(self) -> int:
        return sum(len(rids) for rids in self.rids)

    def append(self, chunk: EventChunk, indices: np.ndarray, rids: np.ndarray) -> None:
        """Keep rows `indices` of `chunk` (less its `kind` column) under `rids` (ascending, above
        every id held), with their position and source."""
        if not len(indices):
            return
        rows = chunk.table.take(pa.array(indices, pa.int64()))
        if KIND in rows.column_names:
            rows = rows.drop_columns([KIND])
        rows = rows.append_column(POSITION, pa.array(chunk.positions[indices], pa.int64()))
        rows = rows.append_column(SOURCE, pa.repeat(pa.scalar(chunk.source, pa.string()), len(indices)))
        self._extend(rows, np.array(rids, np.int64))   # a copy: `rids` may be a view of reused memory

    def _extend(self, rows: pa.Table, rids: np.ndarray) -> None:
        self.parts.append(rows.combine_chunks())
        self._table = None
        self.rids.append(rids)
        self.dead.append(np.zeros(len(rids), bool))
        self.first = np.append(self.first, rids[0])
        self.alive = np.append(self.alive, len(rids))

    def take(self, rids: np.ndarray) -> pa.Table:
        """The rows of `rids` (held, each once), in that order; they die."""
        part = np.searchsorted(self.first, rids, side="right") - 1
        index = np.empty(len(rids), np.int64)
        offset = 0
        for p, rows in enumerate(self.rids):
            mine = part == p
            if mine.any():
                local = np.searchsorted(rows, rids[mine])
                self.dead[p][local] = True
                index[mine] = offset + local
            offset += len(rows)
        if self._table is None:
            self._table = pa.concat_tables(self.parts, promote_options="default")
        taken = self._table.take(pa.array(index, pa.int64()))
        self.alive -= np.bincount(part, minlength=len(self.parts))
        if not self.alive.all():
            self._drop_dead_parts()
        return taken

    def _drop_dead_parts(self) -> None:
        keep = np.flatnonzero(self.alive)
        self.parts = [self.parts[i] for i in keep]
        self.rids = [self.rids[i] for i in keep]
        self.dead = [self.dead[i] for i in keep]
        self.first, self.alive = self.first[keep], self.alive[keep]
        self._table = None

    def state(self) -> pa.Table:
        """The living rows with their ids (column "_rid")."""
        if not self.parts:
            return pa.table({"_rid": pa.array([], pa.int64())})
        living = [part.filter(pa.array(~dead)).append_column("_rid", pa.array(rids[~dead], pa.int64()))
                  for part, rids, dead in zip(self.parts, self.rids, self.dead, strict=True)]
        return pa.concat_tables(living, promote_options="default").combine_chunks()

    def load(self, state: pa.Table) -> None:
        """Hold the rows of `state()` (into an empty store)."""
        if state.num_rows:
            self._extend(state.drop_columns(["_rid"]), state.column("_rid").to_numpy())
