"""`RequestFeaturizer`: the `Batch` `FeaturePipeline.build` makes of a scoring request's rows, built
straight from the request's Python values, without an Arrow table.

A request's rows (`RequestRows`) share most columns (the user, the context: one value for all rows)
and differ in a few (the candidate item and its fields: one value per row), all in their live form
(`freshrec.events.live.check_value`: ids as strings, numbers as floats, None for missing). Each
distinct (table, value) is hashed once with the pipeline's own hashing (`hash_values` over the new
values of a request together) and remembered, up to `cache_size` values, so a request of known ids
costs dictionary lookups; a shared column is hashed once and repeated. The result equals the
pipeline's batch of the same rows as an Arrow table (tests/features/test_request.py holds them equal).

>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL),
...          FeatureSpec("price", FieldKind.DENSE, transform="log1p")]
>>> rows = RequestRows(3, shared={"user_id": "u7"}, per_row={"item_id": ["a", "b", None], "price": [9.0, None, 0.0]})
>>> batch = RequestFeaturizer(specs).build(rows)
>>> batch.sparse.keys(), batch.sparse.lengths().tolist(), [round(x, 3) for x in batch.dense.squeeze(1).tolist()]
(['user_id', 'item_id'], [1, 1, 1, 1, 1, 1], [2.303, 0.0, 0.0])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from freshrec._hashing import field_salt, hash_values
from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import ITEM, FieldKind
from freshrec.features.content import ItemContent, content_block, is_content
from freshrec.features.spec import FeatureSpec

__all__ = ["RequestFeaturizer", "RequestRows"]


@dataclass
class RequestRows:
    """`n` rows of a request: a column of `shared` has one value for every row, a column of `per_row`
    a list of `n`; a column in neither is missing (None) in every row. `ts`: the rows' time."""

    n: int
    shared: dict[str, object] = field(default_factory=dict)
    per_row: dict[str, list] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def column(self, name: str) -> list:
        """The column's `n` values."""
        if name in self.per_row:
            return self.per_row[name]
        return [self.shared.get(name)] * self.n


class RequestFeaturizer:
    """Builds request batches for the features `specs` (sparse first, then dense, as the pipeline)."""

    def __init__(self, specs: Sequence[FeatureSpec], cache_size: int = 1 << 20,
                 content: ItemContent | None = None) -> None:
        """`content`: the items' content vectors, for a model whose dense features end with content columns
        (each row's item's vector); ValueError when such a model has none (see `content_block`)."""
        self.sparse = [(s, field_salt(s.table_name)) for s in specs if s.is_sparse]
        self.content = content
        self.content_width = content_block(specs, content, "request features")
        self.dense = [s for s in specs if not s.is_sparse and not is_content(s)]
        self.dense_keys = tuple(s.name for s in specs if not s.is_sparse)
        self.cache_size = cache_size
        self._ids: dict[int, dict[str | None, int]] = {}   # salt -> value -> id
        self._size = 0

    def _hash(self, salt: int, values: Sequence[str | None]) -> np.ndarray:
        """The ids of `values` (strings or None) in the table with `salt`."""
        cache = self._ids.get(salt)
        if cache is None:
            cache = self._ids[salt] = {}
        try:
            return np.fromiter(map(cache.__getitem__, values), np.int64, len(values))
        except KeyError:
            pass
        new = list({value for value in values if value not in cache})
        if self._size + len(new) > self.cache_size:   # full: start again with this request's values
            for known in self._ids.values():
                known.clear()
            self._size, new = 0, list(set(values))
        cache.update(zip(new, hash_values(pa.array(new, pa.string()), salt).tolist(), strict=True))
        self._size += len(new)
        return np.fromiter(map(cache.__getitem__, values), np.int64, len(values))

    def ids(self, column: str, values: Sequence[str | None]) -> tuple[FeatureSpec, np.ndarray] | None:
        """The categorical feature of source `column` and the ids its batches give `values` (live
        form: strings), from the same cache; None when no categorical feature reads `column`."""
        for spec, salt in self.sparse:
            if spec.source_column == column and spec.kind is FieldKind.CATEGORICAL:
                return spec, self._hash(salt, values)
        return None

    def _sparse(self, spec: FeatureSpec, salt: int, rows: RequestRows) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths) of one sparse feature, as `FeaturePipeline` makes them."""
        n = rows.n
        if spec.kind is FieldKind.MULTI_CATEGORICAL:
            lists = [value or [] for value in rows.column(spec.source_column)]
            lengths = np.fromiter(map(len, lists), np.int32, n)
            ids = self._hash(salt, [v for value in lists for v in value])
            if spec.missing == "drop":
                keep = ids != self._hash(salt, [""])[0]
                lengths = np.bincount(np.repeat(np.arange(n), lengths)[keep], minlength=n).astype(np.int32)
                ids = ids[keep]
            return ids, lengths
        name = spec.source_column
        if name in rows.per_row:
            ids = self._hash(salt, rows.per_row[name])
        else:
            ids = np.full(n, self._hash(salt, [rows.shared.get(name)])[0], np.int64)
        if spec.missing == "drop":
            keep = ids != self._hash(salt, [""])[0]
            return ids[keep], keep.astype(np.int32)
        return ids, np.ones(n, np.int32)

    def _dense_matrix(self, rows: RequestRows) -> np.ndarray:
        columns = np.empty((len(self.dense), rows.n), np.float32)
        for j, spec in enumerate(self.dense):
            values = rows.per_row.get(spec.source_column)
            if values is None:
                value = rows.shared.get(spec.source_column)
                columns[j] = spec.fill if value is None else value
            else:
                columns[j] = [spec.fill if value is None else value for value in values]
        logs = [j for j, spec in enumerate(self.dense) if spec.transform == "log1p"]
        if logs:
            block = columns[logs]
            columns[logs] = np.copysign(np.log1p(np.abs(block)), block)  # signed log1p, as the pipeline
        if self.content_width:
            return np.ascontiguousarray(np.hstack([columns.T, self.content.vectors(rows.column(ITEM))]))
        return np.ascontiguousarray(columns.T)

    def build(self, rows: RequestRows) -> Batch:
        """The batch of `rows` (labels NaN: a request has none)."""
        ids, lengths = [], []
        for spec, salt in self.sparse:
            values, per_row = self._sparse(spec, salt, rows)
            ids.append(values)
            lengths.append(per_row)
        sparse = SparseFeatures(
            [spec.name for spec, _ in self.sparse],
            torch.from_numpy(np.concatenate(ids) if ids else np.zeros(0, np.int64)),
            torch.from_numpy(np.concatenate(lengths) if lengths else np.zeros(0, np.int32)), check=False)
        return Batch(sparse, torch.from_numpy(self._dense_matrix(rows)), torch.full((rows.n,), float("nan")),
                     torch.full((rows.n,), rows.ts, dtype=torch.float64), self.dense_keys)
