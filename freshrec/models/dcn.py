"""`DCNv2`: Deep & Cross Network v2 (Wang et al. 2021) over dynamic tables.

x0 = [pooled embedding of each sparse field (its own table, width `dim`), dense features].
Each full-rank cross layer computes x_{l+1} = x0 * (W_l x_l + b_l) + x_l. "stacked" feeds the
cross network's output to the deep MLP; "parallel" runs both on x0 and concatenates them. A
linear head gives the logit.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("x", FieldKind.DENSE)]
>>> model = DCNv2(specs, DCNConfig(dim=4, cross_layers=2, hidden=(8,), structure="parallel"))
>>> batch = Batch(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)),
...               dense=torch.ones(2, 1), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.zeros(2, dtype=torch.float64), dense_keys=("x",))
>>> model(batch, train=True).shape, sorted(model.tables)
(torch.Size([2]), ['user_id'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from freshrec.batch import Batch
from freshrec.embedding import EmbeddingCollection
from freshrec.features import FeatureSpec
from freshrec.models.base import ModelConfig, OnlineModel, mlp, seeded, tower

STRUCTURES = ("stacked", "parallel")


@dataclass(frozen=True)
class DCNConfig(ModelConfig):
    """`ModelConfig` plus `cross_layers`, the deep MLP's `hidden` widths, `structure`
    ("stacked" or "parallel"), the `pooling` of multi-valued fields ("sum" or "mean") and
    `checkpoint_towers` (recompute the cross and deep layers' activations in backward instead of
    keeping them: `freshrec.models.base.tower`)."""

    cross_layers: int = 3
    hidden: tuple[int, ...] = (64, 32)
    structure: str = "stacked"
    pooling: str = "mean"
    checkpoint_towers: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure {self.structure!r} is not one of {STRUCTURES}")
        if self.cross_layers < 0 or any(size < 1 for size in self.hidden):
            raise ValueError(f"cross_layers must be >= 0 and hidden widths >= 1: {self}")


class CrossNetwork(nn.Module):
    """Full-rank DCN-v2 cross layers: x_{l+1} = x0 * (W_l x_l + b_l) + x_l."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(OnlineModel):
    """Cross network + deep MLP over per-field embeddings (one table per `spec.table_name`)."""

    def __init__(self, specs: Sequence[FeatureSpec], config: DCNConfig | None = None) -> None:
        super().__init__(specs, config or DCNConfig())
        config = self.config
        self.embeddings = EmbeddingCollection([replace(s, dim=config.dim) for s in self.sparse_specs],
                                              config.table(config.dim), pooling=config.pooling)
        width = len(self.sparse_specs) * config.dim + len(self.dense_specs)
        deep_width = config.hidden[-1] if config.hidden else width
        head = deep_width + width if config.structure == "parallel" else deep_width
        with seeded(config.seed):
            self.cross = CrossNetwork(width, config.cross_layers)
            self.deep = mlp(width, config.hidden)
            self.head = nn.Linear(head, 1)

    def forward(self, batch: Batch, train: bool = False) -> torch.Tensor:
        """Logits `[B]`."""
        now = self.check(batch)
        pooled = self.embeddings(batch.sparse, now, train) if self.sparse_specs else {}
        x0 = torch.cat([*pooled.values(), batch.dense], dim=1)
        return self.head(tower(self._towers, x0, self.config.checkpoint_towers)).squeeze(1)

    def _towers(self, x0: torch.Tensor) -> torch.Tensor:
        if self.config.structure == "stacked":
            return self.deep(self.cross(x0))
        return torch.cat([self.cross(x0), self.deep(x0)], dim=1)
