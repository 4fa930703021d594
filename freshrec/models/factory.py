"""`build_model`: a model by name from specs and a config: a ranking model of `MODELS` ("lr", "fm",
"deepfm", "dcn"), the ones `model.name` chooses from, or the retrieval model "two_tower"
(`RETRIEVAL_MODELS`).

>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> model = build_model("deepfm", [FeatureSpec("user_id", FieldKind.CATEGORICAL)], ModelConfig(dim=8))
>>> type(model).__name__, type(model.config).__name__, model.config.dim
('DeepFM', 'DeepFMConfig', 8)
>>> build_model("gbdt", [])
Traceback (most recent call last):
...
ValueError: unknown model 'gbdt'; choose one of: lr, fm, deepfm, dcn, two_tower
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
from freshrec.models.two_tower import TwoTower, TwoTowerConfig

MODELS: dict[str, tuple[type[OnlineModel], type[ModelConfig]]] = {
    "lr": (LogisticRegression, LRConfig), "fm": (OnlineFM, FMConfig),
    "deepfm": (DeepFM, DeepFMConfig), "dcn": (DCNv2, DCNConfig)}
RETRIEVAL_MODELS: dict[str, tuple[type[OnlineModel], type[ModelConfig]]] = {
    "two_tower": (TwoTower, TwoTowerConfig)}


def registered() -> dict[str, tuple[type[OnlineModel], type[ModelConfig]]]:
    """Every model a snapshot can hold, by name: the ranking models, then the retrieval ones."""
    return {**MODELS, **RETRIEVAL_MODELS}


def build_model(name: str, specs: Sequence[FeatureSpec], config: ModelConfig | None = None) -> OnlineModel:
    """The model `name` over `specs`. `config` may be the model's own config class or a plain
    `ModelConfig`, whose shared settings then go into the model's config (other options default)."""
    models = registered()
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(models)}")
    model, config_class = models[name]
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)}
        config = config_class(**shared)
    return model(specs, config)
