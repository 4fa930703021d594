"""`build_model`: a model by name ("lr", "fm", "deepfm", "dcn") from specs and a config.

>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> model = build_model("deepfm", [FeatureSpec("user_id", FieldKind.CATEGORICAL)], ModelConfig(dim=8))
>>> type(model).__name__, type(model.config).__name__, model.config.dim
('DeepFM', 'DeepFMConfig', 8)
>>> build_model("gbdt", [])
Traceback (most recent call last):
...
ValueError: unknown model 'gbdt'; choose one of: lr, fm, deepfm, dcn
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from freshrec.features import FeatureSpec
from freshrec.models.base import ModelConfig, OnlineModel
from freshrec.models.dcn import DCNConfig, DCNv2
from freshrec.models.deepfm import DeepFM, DeepFMConfig
from freshrec.models.fm import FMConfig, OnlineFM
from freshrec.models.lr import LogisticRegression, LRConfig

MODELS: dict[str, tuple[type[OnlineModel], type[ModelConfig]]] = {
    "lr": (LogisticRegression, LRConfig), "fm": (OnlineFM, FMConfig),
    "deepfm": (DeepFM, DeepFMConfig), "dcn": (DCNv2, DCNConfig)}


def build_model(name: str, specs: Sequence[FeatureSpec], config: ModelConfig | None = None) -> OnlineModel:
    """The model `name` over `specs`. `config` may be the model's own config class or a plain
    `ModelConfig`, whose shared settings then go into the model's config (other options default)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    model, config_class = MODELS[name]
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)}
        config = config_class(**shared)
    return model(specs, config)
