"""`FreshrecConfig`: the whole YAML config, one section per part of the system.

The article's case-study block is valid as written; every section has defaults, so `{}` is valid too.
Settings that depend on each other are checked together (`problems()`), so `freshrec config check`
refuses what `freshrec run` would.

>>> config = FreshrecConfig.model_validate({"gpu": {"type": "A100", "count": 8, "autoscale": True},
...                                          "training": {"online_batch_size": 512, "offline_interval": "6h"}})
>>> config.training.offline_interval, config.gpu.count, config.model.name
(21600.0, 8, 'fm')
>>> FreshrecConfig.model_validate({"embedding": {"optimizer": "ftrl"}}).problems()
["embedding.optimizer: model 'fm' supports adagrad, got 'ftrl'"]
"""

from __future__ import annotations

from pydantic import Field

from freshrec.config.durations import format_duration
from freshrec.config.section import Section
from freshrec.config.sections import (
    OPTIMIZERS,
    AlertsSection,
    AutoscaleSection,
    ContentSection,
    DevicesSection,
    EmbeddingSection,
    ExperimentSection,
    FeaturesSection,
    FusionSection,
    GpuSection,
    JoinSection,
    LogSection,
    ModelSection,
    RetrievalSection,
    ServeSection,
    SourceSection,
    SyncSection,
    TrainingSection,
)

__all__ = ["FreshrecConfig"]


class FreshrecConfig(Section):
    """The configuration of a freshrec deployment (frozen; unknown keys are errors)."""

    source: SourceSection = Field(default_factory=SourceSection, description="Where events come from")
    join: JoinSection = Field(default_factory=JoinSection, description="Impressions joined with later actions (labels)")
    features: FeaturesSection = Field(default_factory=FeaturesSection, description="How events become model inputs")
    model: ModelSection = Field(default_factory=ModelSection, description="The online model")
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection,
                                        description="The embedding tables' row-wise optimizer")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Online and offline training")
    sync: SyncSection = Field(default_factory=SyncSection, description="Publishing the trained model to the servers")
    serve: ServeSection = Field(default_factory=ServeSection, description="The HTTP server")
    content: ContentSection = Field(default_factory=ContentSection,
                                    description="The items' content (text) for features.content and retrieval")
    retrieval: RetrievalSection = Field(default_factory=RetrievalSection,
                                        description="A two-tower retrieval model learned beside it (off by default)")
    experiment: ExperimentSection = Field(default_factory=ExperimentSection,
                                          description="Live A/B arms in the server (none by default)")
    fusion: FusionSection = Field(default_factory=FusionSection, description="Blending online and offline predictions")
    log: LogSection = Field(default_factory=LogSection, description="The event log (the article's batch storage)")
    gpu: GpuSection = Field(default_factory=GpuSection, description="GPUs (the article's gpu block)")
    autoscale: AutoscaleSection = Field(default_factory=AutoscaleSection,
                                        description="Scaling the trainer group with load (freshrec autoscale)")
    devices: DevicesSection = Field(default_factory=DevicesSection,
                                    description="Device classes: cost and speed, hot and cold tiers")
    alerts: AlertsSection = Field(default_factory=AlertsSection,
                                  description="Alerts: staleness, stalled training, AUC drop, drift, dead letters")

    def problems(self) -> list[str]:
        """Settings that are valid alone but not together, one line each naming the key."""
        lines, source = [], self.source
        supported = OPTIMIZERS[self.model.name]
        if self.embedding.optimizer not in supported:
            lines.append(f"embedding.optimizer: model {self.model.name!r} supports {' or '.join(supported)}, "
                         f"got {self.embedding.optimizer!r}")
        if bool(self.model.ordinal_levels) != bool(self.features.target):
            lines.append("model.ordinal_levels: goes with features.target (the graded column), set both or neither")
        if self.model.ordinal_levels and self.model.loss != "bce":
            lines.append(f"model.ordinal_levels: needs model.loss bce, got {self.model.loss!r}")
        if len(set(self.model.ordinal_levels)) < len(self.model.ordinal_levels):
            lines.append(f"model.ordinal_levels: expected distinct levels, got {list(self.model.ordinal_levels)}")
        tabular = source.format in ("csv", "parquet")
        if tabular != (source.columns is not None):
            lines.append(f"source.columns: format {source.format!r} needs a column mapping (user, item, time)"
                         if tabular else f"source.columns: only for format csv or parquet, not {source.format!r}")
        if source.kind == "kafka" and source.limit is not None:
            lines.append("source.limit: replay only (a kafka run ends on source.kafka.idle_timeout or a signal)")
        if self.training.workers > 1:
            lines += self.group_problems()
        if self.features.content and self.content.items is None and source.format != "movielens-100k":
            lines.append(f"features.content: {source.format} events carry no item text; name a file of item_id and "
                         "text columns in content.items")
        window, retention = self.training.offline_window, self.log.retention
        if retention is not None and (window is None or window > retention) and (
                self.training.offline_interval is not None or self.training.offline_events is not None):
            reads = "the whole log" if window is None else format_duration(window)
            lines.append(f"log.retention: {format_duration(retention)} keeps less than offline retraining reads "
                         f"(training.offline_window: {reads}); set training.offline_window to at most "
                         f"{format_duration(retention)}")
        if self.autoscale.min > self.autoscale.max:
            lines.append(f"autoscale.min: {self.autoscale.min} is above autoscale.max {self.autoscale.max}")
        return lines

    def group_problems(self) -> list[str]:
        """What a group of workers (`training.workers` > 1, or a run under torchrun) does not do yet,
        one line each naming the key and how to turn it off."""
        lines, t = [], self.training
        if t.offline_interval is not None or t.offline_events is not None:
            lines.append("training.offline_interval: a worker group does not retrain offline yet; "
                         "add --offline-interval off")
        if self.join.window is not None:
            lines.append("join.window: a worker group does not join impressions yet")
        if self.sync.share is not None:
            lines.append("sync.share: a worker group does not share its tables in memory yet")
        if self.retrieval.enabled:
            lines.append("retrieval.enabled: a worker group does not learn a two-tower yet")
        if self.features.content:
            lines.append("features.content: a worker group does not read item content yet")
        if self.gpu.device.startswith("cuda:"):
            lines.append(f"gpu.device: {self.gpu.device}: each worker of a group learns on a GPU of its own "
                         "(cuda:LOCAL_RANK); ask for cuda")
        if self.gpu.precision == "fp16":
            lines.append("gpu.precision: fp16: a worker group does not scale its gradients yet; use bf16 or fp32")
        return lines
