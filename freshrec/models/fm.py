"""`OnlineFM`: a factorization machine over one shared dynamic table.

Every sparse field goes into ONE `DynamicEmbedding` named "fm" (ids are salted per field by the
pipeline, so fields never collide) of width k + 1: column 0 is the linear weight w of the id,
columns 1..k its factors v. Dense features enter linearly only. For a row whose id occurrences
(every id of every sparse field, each with value 1) are i:

    logit = bias + dense_w . x + sum_i w_i + 0.5 * sum_d [(sum_i v_id)^2 - sum_i v_id^2]

Ids without a row (not admitted yet) read as zeros. The loss is BCE with logits for 0/1 labels
and MSE for ratings (`FMConfig.loss`).

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("genres", FieldKind.MULTI_CATEGORICAL),
...          FeatureSpec("price", FieldKind.DENSE)]
>>> fm = OnlineFM(specs, FMConfig(dim=4))
>>> batch = Batch(SparseFeatures(["user_id", "genres"], torch.tensor([11, 12, 5, 6, 7]),
...                              torch.tensor([1, 1, 2, 1], dtype=torch.int32)),
...               dense=torch.ones(2, 1), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.tensor([1.0, 2.0], dtype=torch.float64), dense_keys=("price",))
>>> fm(batch, train=True).shape, list(fm.tables), fm.table.live, fm.table.config.dim
(torch.Size([2]), ['fm'], 5, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from freshrec.batch import Batch
from freshrec.embedding import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    DynamicEmbedding,
    EmbeddingCollection,
    TableConfig,
)
from freshrec.features import FeatureSpec
from freshrec.models.base import LINEAR_STEP, ModelConfig, OnlineModel, zero_linear

TABLE = "fm"


@dataclass(frozen=True)
class FMConfig(ModelConfig):
    """`ModelConfig`; `dim` is the number of factors k (the table is k + 1 wide).

    `linear_lr` is the Adagrad learning rate of the table's column 0, the ids' linear weights;
    the factors keep `lr`. None: `LINEAR_STEP / fields` when `lr` is automatic too, else `lr`.
    The defaults (0.5 / fields for the factors, 2 / fields for the linear weights) give AUC
    0.768 on MovieLens-100k learning event by event (7 fields: lr 0.071, linear_lr 0.29), where
    the best single lr reaches 0.761 (larger ones overfit the factors), and 0.726 on the Criteo
    head (26 fields), where MovieLens' rates give 0.689. The search (prequential AUC with the
    default micro-batches, MovieLens-100k / Criteo head): the linear step trades one for the
    other (1.4 / fields: 0.766 / 0.732; 2: 0.768 / 0.726; 2.8: 0.767 / 0.723), the initial
    accumulator too (0: 0.766 / 0.716; 0.1: 0.768 / 0.726; 1: 0.764 / 0.732),
    the factors' step matters less (0.2-0.56 / fields within 0.004 on both), and dims 8-32,
    admission after 2-3 sightings and the dense rate (0.02-0.2) within 0.002 on MovieLens.

    >>> config = FMConfig().for_fields(4)
    >>> config.lr, config.linear_lr, FMConfig(lr=0.1).for_fields(4).linear_lr
    (0.125, 0.5, 0.1)
    """

    linear_lr: float | None = None

    def for_fields(self, fields: int) -> FMConfig:
        """`ModelConfig.for_fields`, and `linear_lr` (see the class)."""
        linear = self.linear_lr
        if linear is None:
            linear = LINEAR_STEP / max(fields, 1) if self.lr is None else self.lr
        return replace(super().for_fields(fields), linear_lr=linear)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.linear_lr is not None and not self.linear_lr > 0:
            raise ValueError(f"linear_lr must be > 0, not {self.linear_lr}")

    def table(self, dim: int, optimizer: SGD | Adagrad | Adam | FTRL | None = None) -> TableConfig:
        """As `ModelConfig.table`, the default Adagrad taking `linear_lr` for column 0."""
        if optimizer is None and self.linear_lr is not None:
            optimizer = Adagrad(lr=self.lr, initial_accumulator=self.initial_accumulator,
                                first_column_lr=self.linear_lr)
        return super().table(dim, optimizer)


def field_sums(looked: dict[str, tuple[torch.Tensor, torch.Tensor]],
               rows_in_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From per-feature unpooled rows: (per-field sums `[F, B, width]`, the sum over every id
    occurrence of the squared rows `[B, width]`)."""
    rows = torch.cat([r for r, _ in looked.values()])
    lengths = torch.cat([n for _, n in looked.values()]).to(torch.int64)
    fields = len(looked)
    width = rows.shape[1]
    if rows.shape[0] == fields * rows_in_batch and bool((lengths == 1).all()):
        return rows.view(fields, rows_in_batch, width), (rows * rows).view(fields, rows_in_batch, width).sum(0)
    sums = torch.segment_reduce(rows, "sum", lengths=lengths, axis=0)  # bags are consecutive
    squares = torch.segment_reduce(rows * rows, "sum", lengths=lengths, axis=0)
    return sums.view(fields, rows_in_batch, width), squares.view(fields, rows_in_batch, width).sum(0)


def fm_logit(sums: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """The linear plus pairwise part from `field_sums` (column 0 = w, columns 1.. = v)."""
    total = sums.sum(0)
    factors = total[:, 1:]
    return total[:, 0] + 0.5 * (factors * factors - squares[:, 1:]).sum(1)


class OnlineFM(OnlineModel):
    """A factorization machine (see the module docstring) on the "fm" table of width k + 1.

    `table` is the `DynamicEmbedding`, `dense_weight` the dense linear weight `[1, D]` and `bias`
    the global bias `[1]`; all dense parameters start at zero.
    """

    def __init__(self, specs: Sequence[FeatureSpec], config: FMConfig | None = None) -> None:
        super().__init__(specs, config or FMConfig())
        config = self.config
        shared = [replace(s, table=TABLE, dim=config.dim + 1) for s in self.sparse_specs]
        self.embeddings = EmbeddingCollection(shared, config.table(config.dim + 1))
        self.dense = zero_linear(len(self.dense_specs))
        self.bias = nn.Parameter(torch.zeros(1))

    @property
    def table(self) -> DynamicEmbedding:
        return self.embeddings.tables[TABLE]

    @property
    def dense_weight(self) -> nn.Parameter:
        return self.dense.weight

    def parts(self, batch: Batch, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(FM logits `[B]`, per-field sums `[F, B, k + 1]`) - DeepFM reuses the field sums."""
        now = self.check(batch)
        rows = len(batch)
        logits = self.bias + self.dense(batch.dense).squeeze(1)
        if not self.sparse_specs:
            return logits, logits.new_zeros(0, rows, self.config.dim + 1)
        sums, squares = field_sums(self.embeddings.lookup(batch.sparse, now, train), rows)
        return logits + fm_logit(sums, squares), sums

    def forward(self, batch: Batch, train: bool = False) -> torch.Tensor:
        """Logits `[B]` (predicted ratings with `loss="mse"`)."""
        return self.parts(batch, train)[0]
