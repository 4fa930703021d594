"""`FeaturePipeline`: an `EventChunk` -> a `Batch`, vectorised over the whole chunk.

>>> from freshrec.events.event import Event, EventChunk, FieldKind
>>> chunk = EventChunk.from_events([Event("a", 1.0, 7, 3, fields={"price": 9.0}, label=1.0),
...                                 Event("b", 2.0, 8, 3, fields={"price": None}, label=0.0)], "demo")
>>> pipeline = FeaturePipeline([FeatureSpec("user_id", FieldKind.CATEGORICAL),
...                             FeatureSpec("price", FieldKind.DENSE, transform="log1p")])
>>> batch = pipeline.build(chunk)
>>> batch.sparse.keys(), batch.dense.squeeze(1).tolist(), batch.labels.tolist()
(['user_id'], [2.3025851249694824, 0.0], [1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from freshrec._hashing import (
    field_salt,
    hash_values,
    is_valid,
    missing_id,
    validity_bitmap,
)
from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import ITEM, LABEL, TS, EventChunk, FieldKind
from freshrec.features.content import ItemContent, content_block
from freshrec.features.spec import FeatureSpec


def _ids_and_lengths(column: pa.Array, spec: FeatureSpec, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash one column; returns (ids, per-row lengths)."""
    if spec.kind is FieldKind.MULTI_CATEGORICAL:
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            raise TypeError(f"{spec.name}: a multi-categorical column must be a list, got {column.type}")
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int32)
        ids = hash_values(pc.list_flatten(column), salt)
        if spec.missing == "drop":
            keep = ids != missing_id(salt)
            rows = np.repeat(np.arange(len(lengths)), lengths)
            lengths = np.bincount(rows[keep], minlength=len(lengths)).astype(np.int32)
            ids = ids[keep]
        return ids, lengths
    ids = hash_values(column, salt)
    if spec.missing == "drop":
        keep = ids != missing_id(salt)
        return ids[keep], keep.astype(np.int32)
    return ids, np.ones(len(ids), dtype=np.int32)


@numba.njit(nogil=True, cache=True)
def _fill_dense(values, bits, bit_offset, fill, out):
    """Copy a numeric column into float32 `out`, nulls and NaN replaced by `fill`."""
    for i in range(len(values)):
        x = np.float32(values[i])
        out[i] = fill if not is_valid(bits, bit_offset, i) or np.isnan(x) else x


def _dense_matrix(chunk: EventChunk, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """The dense features `[rows, len(specs)]` float32: filled per column, transformed in bulk."""
    columns = np.empty((len(specs), len(chunk)), dtype=np.float32)
    for j, spec in enumerate(specs):
        column = chunk.column(spec.source_column)
        if pa.types.is_boolean(column.type) or pa.types.is_float16(column.type) or not (
                pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise TypeError(f"{spec.name}: a dense column must be numeric, got {column.type}")
        dtype = column.type.to_pandas_dtype()
        values = np.frombuffer(column.buffers()[1], dtype)[column.offset: column.offset + len(column)]
        _fill_dense(values, *validity_bitmap(column), spec.fill, columns[j])
    logs = [j for j, spec in enumerate(specs) if spec.transform == "log1p"]
    if logs:
        block = columns[logs]
        columns[logs] = np.copysign(np.log1p(np.abs(block)), block)  # signed log1p
    return np.ascontiguousarray(columns.T)


class FeaturePipeline:
    """Turns chunks into Batches following a list of `FeatureSpec`s (sparse first, then dense);
    with `target`, that numeric column becomes `Batch.targets` (nulls NaN)."""

    def __init__(self, specs: Sequence[FeatureSpec], target: str | None = None,
                 content: ItemContent | None = None) -> None:
        """`content`: the items' content vectors, for specs whose dense features end with content columns (each
        row's item's vector, `is_content`); ValueError when they do and it is None."""
        self.specs = tuple(specs)
        self.target = target
        self.content = content
        self.content_width = content_block(self.specs, content, "features")

    def build(self, chunk: EventChunk) -> Batch:
        """One `Batch` from one chunk; no Python loop per record."""
        sparse_specs = [s for s in self.specs if s.is_sparse]
        dense_specs = [s for s in self.specs if not s.is_sparse]
        plain = dense_specs[: len(dense_specs) - self.content_width]
        ids, lengths = [], []
        for spec in sparse_specs:
            values, per_row = _ids_and_lengths(chunk.column(spec.source_column), spec,
                                               field_salt(spec.table_name))
            ids.append(values)
            lengths.append(per_row)
        dense = _dense_matrix(chunk, plain)
        if self.content_width:
            dense = np.ascontiguousarray(np.hstack([dense, self.content.vectors(chunk.column(ITEM))]))
        sparse = SparseFeatures(
            [s.name for s in sparse_specs],
            torch.from_numpy(np.concatenate(ids) if ids else np.zeros(0, np.int64)),
            torch.from_numpy(np.concatenate(lengths) if lengths else np.zeros(0, np.int32)),
            check=False)  # consistent by construction: one length per row and key
        return Batch(sparse, torch.from_numpy(dense), self._labels(chunk), self._times(chunk),
                     tuple(s.name for s in dense_specs), self._targets(chunk))

    @staticmethod
    def _labels(chunk: EventChunk) -> torch.Tensor:
        if LABEL not in chunk.table.column_names:
            return torch.full((len(chunk),), float("nan"))
        labels = pc.fill_null(chunk.column(LABEL).cast(pa.float32()), float("nan"))
        return torch.from_numpy(labels.to_numpy(zero_copy_only=False).copy())

    def _targets(self, chunk: EventChunk) -> torch.Tensor | None:
        if self.target is None:
            return None
        if self.target not in chunk.table.column_names:
            names = ", ".join(chunk.table.column_names)
            raise ValueError(f"target {self.target!r} is not a column of the stream ({names})")
        column = chunk.column(self.target)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise TypeError(f"target {self.target!r} must be a numeric column, got {column.type}")
        values = pc.fill_null(column.cast(pa.float32()), float("nan"))
        return torch.from_numpy(values.to_numpy(zero_copy_only=False).copy())

    @staticmethod
    def _times(chunk: EventChunk) -> torch.Tensor:
        return torch.from_numpy(chunk.column(TS).cast(pa.float64()).to_numpy(zero_copy_only=False).copy())
