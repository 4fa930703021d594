"""Configuration at the edges: the YAML config (`FreshrecConfig`, `load_config`) and where data and caches live.

>>> config = parse_config({"gpu": {"type": "A100", "count": 8, "autoscale": True},
...                        "training": {"online_batch_size": 512, "offline_interval": "6h"}})
>>> config.training.offline_interval, config.training.online_batch_size, config.gpu.count
(21600.0, 512, 8)
>>> parse_config({"training": {"offline_interval": "6x"}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: training.offline_interval: expected a non-negative duration like 30s, ...
"""

from freshrec.config.columns import ColumnsSection, LabelRule, parse_label
from freshrec.config.durations import DURATION_HELP, Duration, format_duration, parse_duration
from freshrec.config.errors import ConfigError
from freshrec.config.load import load_config, parse_config, show_config, with_overrides
from freshrec.config.paths import cache_dir, data_root
from freshrec.config.schema import FreshrecConfig
from freshrec.config.sections import (
    FORMATS,
    METRICS,
    AlertsSection,
    ArmSection,
    AutoscaleSection,
    ContentSection,
    DeviceClass,
    DevicesSection,
    EmbeddingSection,
    ExperimentSection,
    FeatureOverride,
    FeaturesSection,
    FusionSection,
    GpuSection,
    JoinSection,
    KafkaSection,
    LogSection,
    ModelSection,
    RetrievalSection,
    ServeSection,
    SourceSection,
    SyncSection,
    TrainingSection,
)

__all__ = ["AlertsSection", "ArmSection", "AutoscaleSection", "ColumnsSection", "ConfigError", "ContentSection",
           "DURATION_HELP", "DeviceClass", "DevicesSection", "Duration", "EmbeddingSection", "ExperimentSection",
           "FORMATS", "FeatureOverride", "FeaturesSection",
           "FreshrecConfig", "FusionSection", "GpuSection", "JoinSection", "KafkaSection", "LabelRule", "LogSection",
           "METRICS", "ModelSection", "RetrievalSection", "ServeSection", "SourceSection", "SyncSection",
           "TrainingSection", "cache_dir",
           "data_root", "format_duration", "load_config", "parse_config", "parse_duration", "parse_label",
           "show_config", "with_overrides"]
