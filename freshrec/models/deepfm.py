"""`DeepFM`: `OnlineFM` plus an MLP over the concatenated field embeddings and dense features.

The deep part reads the same factors as the FM part (DeepFM's shared embeddings): for each
sparse field, the sum of its ids' factor columns (1..k of the "fm" table), concatenated field by
field, then the dense features. logit = FM logit + MLP(...).

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)]
>>> model = DeepFM(specs, DeepFMConfig(dim=4, hidden=(8,)))
>>> batch = Batch(SparseFeatures(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
...                              torch.ones(4, dtype=torch.int32)),
...               dense=torch.zeros(2, 0), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.zeros(2, dtype=torch.float64))
>>> model(batch, train=True).shape, model.table.live
(torch.Size([2]), 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from freshrec.batch import Batch
from freshrec.features import FeatureSpec
from freshrec.models.base import mlp, seeded, tower
from freshrec.models.fm import FMConfig, OnlineFM


@dataclass(frozen=True)
class DeepFMConfig(FMConfig):
    """`FMConfig` plus the MLP: `hidden` layer widths, `dropout` (0 keeps training deterministic
    without further seeding) and `checkpoint_towers` (recompute the MLP's activations in backward
    instead of keeping them: `freshrec.models.base.tower`)."""

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    checkpoint_towers: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(size < 1 for size in self.hidden) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"hidden widths must be >= 1 and dropout in [0, 1): {self}")


class DeepFM(OnlineFM):
    """FM part as `OnlineFM` (same table, `dense_weight`, `bias`) plus `deep`, an MLP with a
    scalar head."""

    def __init__(self, specs: Sequence[FeatureSpec], config: DeepFMConfig | None = None) -> None:
        super().__init__(specs, config or DeepFMConfig())
        config = self.config
        width = len(self.sparse_specs) * config.dim + len(self.dense_specs)
        with seeded(config.seed + 1):
            self.deep = nn.Sequential(mlp(width, config.hidden, config.dropout),
                                      nn.Linear(config.hidden[-1] if config.hidden else width, 1))

    def forward(self, batch: Batch, train: bool = False) -> torch.Tensor:
        """FM logits plus the MLP's output, `[B]`."""
        logits, sums = self.parts(batch, train)
        fields = sums[:, :, 1:].permute(1, 0, 2).reshape(len(batch), -1)
        if self.deep.training != train:   # (setting it walks every layer: tens of us a micro-batch)
            self.deep.train(train)
        deep = tower(self.deep, torch.cat([fields, batch.dense], dim=1), self.config.checkpoint_towers)
        return logits + deep.squeeze(1)
