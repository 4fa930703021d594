"""`FreshrecConfig`: the whole YAML config, one section per part of the system.

The article's case-study block is valid as written; every section has defaults, so `{}` is valid too.

>>> config = FreshrecConfig.model_validate({"gpu": {"type": "A100", "count": 8, "autoscale": True},
...                                          "training": {"online_batch_size": 512, "offline_interval": "6h"}})
>>> config.training.offline_interval, config.gpu.count, config.model.name
(21600.0, 8, 'fm')
>>> config.to_model_config()
FMConfig(dim=16, lr=0.05, init_std=0.01, seed=0, admit_after=1, ttl_seconds=None, capacity=None, loss='bce', \
initial_accumulator=0.0, ordinal_levels=(), linear_lr=None)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pydantic import Field

from freshrec.config.errors import ConfigError
from freshrec.config.sections import (
    EmbeddingSection,
    FeaturesSection,
    FusionSection,
    GpuSection,
    LogSection,
    ModelSection,
    Section,
    ServeSection,
    SourceSection,
    SyncSection,
    TrainingSection,
)

if TYPE_CHECKING:
    from freshrec.models import ModelConfig

__all__ = ["FreshrecConfig"]

class FreshrecConfig(Section):
    """The configuration of a freshrec deployment (frozen; unknown keys are errors)."""

    source: SourceSection = Field(SourceSection(), description="Where events come from")
    features: FeaturesSection = Field(FeaturesSection(), description="How events become model inputs")
    model: ModelSection = Field(ModelSection(), description="The online model")
    embedding: EmbeddingSection = Field(EmbeddingSection(), description="The embedding tables' row-wise optimizer")
    training: TrainingSection = Field(TrainingSection(), description="Online and offline training")
    sync: SyncSection = Field(SyncSection(), description="Publishing the trained model to the servers")
    serve: ServeSection = Field(ServeSection(), description="The HTTP server")
    fusion: FusionSection = Field(FusionSection(), description="Blending online and offline predictions")
    log: LogSection = Field(LogSection(), description="The event log (the article's batch storage)")
    gpu: GpuSection = Field(GpuSection(), description="GPUs (the article's gpu block)")

    def to_model_config(self) -> ModelConfig:
        """The `ModelConfig` subclass of `model.name` (e.g. `FMConfig`) from the `model` and `embedding`
        sections; raises `ConfigError` for an `embedding.optimizer` the model cannot use."""
        from freshrec.models import MODELS  # the model modules load only when needed

        model, embedding = self.model, self.embedding
        config_class = MODELS[model.name][1]
        names = {f.name for f in dataclasses.fields(config_class)}
        ftrl = embedding.optimizer == "ftrl" and "ftrl" in names
        if embedding.optimizer != "adagrad" and not ftrl:
            supported = "adagrad or ftrl" if "ftrl" in names else "adagrad"
            raise ConfigError([f"embedding.optimizer: model {model.name!r} supports {supported}, "
                               f"got {embedding.optimizer!r}"])
        extra = {"ftrl": True} if ftrl else {}
        if "linear_lr" in names:
            extra["linear_lr"] = embedding.linear_lr
        return config_class(dim=model.dim, lr=model.lr, seed=model.seed, admit_after=model.admit_after,
                            ttl_seconds=model.ttl, capacity=model.capacity, loss=model.loss,
                            initial_accumulator=embedding.initial_accumulator, **extra)
