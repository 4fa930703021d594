"""`EmbeddingCollection`: pooled embeddings of many jagged id features over dynamic tables.

Features that name the same `table` share one `DynamicEmbedding` (and so one row per id).
A forward pass looks up every id of a table in one call, gathers the rows into a leaf tensor
that autograd fills with per-occurrence gradients, and pools each (feature, row) bag by sum or
mean. `apply_gradients()` then hands each table the gradients of exactly the rows it served,
which its row-wise optimizer coalesces and applies: only touched rows change.

>>> import torch
>>> from freshrec.batch import SparseFeatures
>>> from freshrec.embedding.optimizers import SGD
>>> from freshrec.embedding.table import TableConfig
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL, dim=4),
...          FeatureSpec("genres", FieldKind.MULTI_CATEGORICAL, dim=4)]
>>> collection = EmbeddingCollection(specs, TableConfig(dim=4, optimizer=SGD(lr=0.1)))
>>> ids = SparseFeatures(["user_id", "genres"], torch.tensor([11, 12, 5, 6, 7]),
...                      torch.tensor([1, 1, 2, 1], dtype=torch.int32))
>>> pooled = collection(ids, now=0.0, train=True)
>>> {name: tuple(t.shape) for name, t in pooled.items()}
{'user_id': (2, 4), 'genres': (2, 4)}
>>> sum(t.sum() for t in pooled.values()).backward(); collection.apply_gradients()
>>> sorted(collection.tables), collection.tables["genres"].live
(['genres', 'user_id'], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from freshrec.batch import SparseFeatures
from freshrec.embedding.table import DynamicEmbedding, TableConfig
from freshrec.features import FeatureSpec

POOLINGS = ("sum", "mean")


def pool(rows: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Sum or mean of consecutive bags of `rows` (`lengths[i]` rows for bag i); empty bags are 0.

    >>> pool(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([2, 0, 1]), "mean").squeeze(1).tolist()
    [2.0, 0.0, 5.0]
    """
    if len(rows) == len(lengths) and bool((lengths == 1).all()):
        return rows  # one id per bag: pooling is the identity
    out = torch.segment_reduce(rows, "sum", lengths=lengths, axis=0)  # bags are consecutive
    if mode == "mean":
        out = out / lengths.clamp(min=1).to(rows.dtype).unsqueeze(1)
    return out


class EmbeddingCollection(nn.Module):
    """Pooled lookups of the sparse `specs` (one table per distinct `spec.table_name`).

    `table` is the template config of every table; each table takes its `dim` from its
    features (features sharing a table must agree on `dim`).
    """

    def __init__(self, specs: Sequence[FeatureSpec], table: TableConfig, pooling: str = "sum") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.specs = tuple(s for s in specs if s.is_sparse)
        self.pooling = pooling
        dims: dict[str, int] = {}
        for spec in self.specs:
            if dims.setdefault(spec.table_name, spec.dim) != spec.dim:
                raise ValueError(f"table {spec.table_name!r} is shared by features of dims "
                                 f"{dims[spec.table_name]} and {spec.dim}")
        self.tables = {name: DynamicEmbedding(replace(table, dim=dim, seed=table.seed + k))
                       for k, (name, dim) in enumerate(sorted(dims.items()))}
        self._served: list[tuple[DynamicEmbedding, np.ndarray, torch.Tensor]] = []

    def forward(self, sparse: SparseFeatures, now: float, train: bool = False) -> dict[str, torch.Tensor]:
        """Pooled `[batch, dim]` embeddings per feature. With `train`, new ids are admitted and
        the rows served are remembered for `apply_gradients()`."""
        return {name: pool(rows, lengths, self.pooling)
                for name, (rows, lengths) in self.lookup(sparse, now, train).items()}

    def lookup(self, sparse: SparseFeatures, now: float,
               train: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Unpooled rows per feature: `(rows [ids, dim], lengths [batch])`, one row per id
        occurrence in batch order (non-admitted ids read as zero rows). Models that need more than
        a pooled sum (FM's sum of squares) pool the rows themselves; `train` as in `forward`.

        >>> from freshrec.events.event import FieldKind
        >>> collection = EmbeddingCollection([FeatureSpec("genres", FieldKind.MULTI_CATEGORICAL, dim=2)],
        ...                                  TableConfig(dim=2))
        >>> ids = SparseFeatures(["genres"], torch.tensor([5, 6, 7]), torch.tensor([2, 1], dtype=torch.int32))
        >>> rows, lengths = collection.lookup(ids, now=0.0, train=True)["genres"]
        >>> tuple(rows.shape), lengths.tolist()
        ((3, 2), [2, 1])
        """
        self._served = []
        features = sparse.to_dict()
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, table in self.tables.items():
            keys = [s.name for s in self.specs if s.table_name == name]
            parts = [features[k].values for k in keys]
            ids = (torch.cat(parts) if len(parts) > 1 else parts[0]).cpu().numpy()
            slots = table.slots(ids, now, train)
            rows = table.gather(slots)
            if train:
                rows.requires_grad_(True)
                self._served.append((table, slots, rows))
            for key, part in zip(keys, torch.split(rows, [p.numel() for p in parts])):
                out[key] = (part, features[key].lengths)
        return {spec.name: out[spec.name] for spec in self.specs}

    def served_gradients(self) -> list[torch.Tensor | None]:
        """The gradients of the rows served by the last training forward (None where no gradient
        reached a table), e.g. to check that they are finite before `apply_gradients()`."""
        return [rows.grad for _, _, rows in self._served]

    def discard_gradients(self) -> None:
        """Forget the rows served by the last training forward without updating them."""
        self._served = []

    def apply_gradients(self, events: int = 1) -> None:
        """Update the rows served by the last training forward with their gradients (of a loss
        averaged over `events` events: `DynamicEmbedding.apply_gradients`)."""
        for table, slots, rows in self._served:
            if rows.grad is not None:
                table.apply_gradients(slots, rows.grad, events=events)
        self._served = []
