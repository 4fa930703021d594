"""`LogisticRegression`: one weight per id (one table "lr" of width 1 for every field: the ids come
salted by their field's table name, as the FM's) plus dense weights.

logit = bias + dense_w . x + sum over the sparse fields of the sum of their ids' weights. The
id weights learn with row-wise Adagrad, or with FTRL-Proximal (`LRConfig(ftrl=True)`, alpha =
`lr`), the classic online CTR learner (McMahan et al. 2013), whose L1 gives exact zeros.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> model = LogisticRegression([FeatureSpec("user_id", FieldKind.CATEGORICAL)], LRConfig(ftrl=True, l1=1.0))
>>> batch = Batch(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)),
...               dense=torch.zeros(2, 0), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.zeros(2, dtype=torch.float64))
>>> model(batch, train=True).tolist(), model.tables["lr"].config.optimizer   # alpha: 2 / fields
([0.0, 0.0], FTRL(alpha=2.0, beta=1.0, l1=1.0, l2=0.0))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from freshrec.batch import Batch
from freshrec.embedding import EmbeddingCollection
from freshrec.embedding.optimizers import FTRL
from freshrec.features import FeatureSpec
from freshrec.models.base import LINEAR_STEP, ModelConfig, OnlineModel, zero_linear

TABLE = "lr"


@dataclass(frozen=True)
class LRConfig(ModelConfig):
    """`ModelConfig` (`dim` unused: id weights are scalars) plus the FTRL option: `ftrl`, and its
    `beta`, `l1`, `l2`. With FTRL the rows start at zero, as FTRL's weights do. The rows are
    linear weights: `lr` None is `LINEAR_STEP / fields` (the FM's `linear_lr` default).

    >>> LRConfig().for_fields(4).lr
    0.5
    """

    ftrl: bool = False
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0

    def for_fields(self, fields: int) -> LRConfig:
        return self if self.lr is not None else replace(self, lr=LINEAR_STEP / max(fields, 1))


class LogisticRegression(OnlineModel):
    """Id weights (the shared table "lr") + `dense` linear + `bias`."""

    def __init__(self, specs: Sequence[FeatureSpec], config: LRConfig | None = None) -> None:
        super().__init__(specs, config or LRConfig())
        config = self.config
        optimizer = FTRL(alpha=config.lr, beta=config.beta, l1=config.l1, l2=config.l2) if config.ftrl else None
        table = config.table(1, optimizer)
        if config.ftrl:
            table = replace(table, initializer="zeros")
        self.embeddings = EmbeddingCollection([replace(s, table=TABLE, dim=1) for s in self.sparse_specs], table)
        self.dense = zero_linear(len(self.dense_specs))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch, train: bool = False) -> torch.Tensor:
        """Logits `[B]`."""
        now = self.check(batch)
        logits = self.bias + self.dense(batch.dense).squeeze(1)
        if self.sparse_specs:
            pooled = self.embeddings(batch.sparse, now, train)
            logits = logits + torch.cat(list(pooled.values()), dim=1).sum(1)
        return logits
