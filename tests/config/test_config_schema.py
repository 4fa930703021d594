"""`FreshrecConfig`: the article's block, defaults, descriptions everywhere, frozen, and the model config."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
from pydantic import BaseModel, ValidationError

from freshrec.config import ConfigError, FreshrecConfig, parse_config
from freshrec.config.errors import _unwrap
from freshrec.engine.build import model_config
from freshrec.engine.dataflow import EngineConfig
from freshrec.engine.sync import SyncConfig
from freshrec.events.datasets import FORMATS
from freshrec.fusion import STRATEGIES, FusionConfig
from freshrec.log import EventLog
from freshrec.models import MODELS, FMConfig, LRConfig, ModelConfig
from freshrec.serve.app import ServeConfig
from freshrec.train.offline import OfflineConfig


def models(root: type[BaseModel]) -> typing.Iterator[type[BaseModel]]:
    """`root` and every model class reachable through its fields (also inside dicts and optionals)."""
    yield root
    for field in root.model_fields.values():
        annotation = _unwrap(field.annotation)
        if typing.get_origin(annotation) is dict:
            annotation = _unwrap(typing.get_args(annotation)[1])
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from models(annotation)


def test_every_field_of_every_section_has_a_description():
    seen = list(models(FreshrecConfig))
    assert len(seen) >= 13   # the root, ten sections, kafka, the feature override
    for model in seen:
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description and field.description.strip(), f"{model.__name__}.{name}"


def test_empty_config_gives_the_defaults_of_the_code():
    config = parse_config(None)
    assert config == FreshrecConfig() == parse_config({})
    assert config.training.online_batch_size == EngineConfig().batch_size
    assert config.training.checkpoint_events == EngineConfig().checkpoint_events
    assert config.sync.sync_interval == SyncConfig().sync_interval
    assert config.sync.full_interval == SyncConfig().full_interval
    serve = ServeConfig()
    assert (config.serve.max_candidates, config.serve.max_body_bytes, config.serve.recommend_candidates) == \
        (serve.max_candidates, serve.max_body_bytes, serve.recommend_candidates)
    model = ModelConfig()
    assert (config.model.dim, config.model.lr, config.model.seed, config.model.loss, config.model.admit_after) == \
        (model.dim, model.lr, model.seed, model.loss, model.admit_after)
    assert config.model.ttl is None and config.model.capacity is None
    log = inspect.signature(EventLog.__init__).parameters
    assert (config.log.roll_bytes, config.log.roll_seconds) == (log["roll_bytes"].default, log["roll_seconds"].default)
    assert config.gpu.count == 0 and config.serve.admin_token_env == "FRESHREC_ADMIN_TOKEN"
    fusion, offline = FusionConfig(), OfflineConfig()
    assert (config.fusion.strategy, config.fusion.window_events, config.fusion.eta) == \
        (fusion.strategy, fusion.window, fusion.eta)
    assert (config.training.epochs, config.training.holdout_fraction, config.training.patience,
            config.training.warm_start) == (offline.epochs, offline.holdout_fraction, offline.patience,
                                            offline.warm_start)


def test_enumerations_follow_the_code():
    fields = FreshrecConfig.model_fields
    source = fields["source"].annotation.model_fields
    assert typing.get_args(source["format"].annotation) == FORMATS
    assert typing.get_args(fields["model"].annotation.model_fields["name"].annotation) == tuple(MODELS)
    assert typing.get_args(fields["fusion"].annotation.model_fields["strategy"].annotation) == STRATEGIES


def test_article_block_verbatim():
    config = parse_config({"gpu": {"type": "A100", "count": 8, "autoscale": True},
                           "training": {"online_batch_size": 512, "offline_interval": "6h"}})
    assert config.training.offline_interval == 21600.0
    assert config.training.online_batch_size == 512
    assert (config.gpu.type, config.gpu.count, config.gpu.autoscale) == ("A100", 8, True)


def test_frozen():
    config = FreshrecConfig()
    with pytest.raises(ValidationError):
        config.training.online_batch_size = 1
    with pytest.raises(ValidationError):
        config.gpu = None


def test_admin_token_comes_from_the_environment_never_the_file(monkeypatch):
    assert "admin_token" not in FreshrecConfig.model_fields["serve"].annotation.model_fields
    with pytest.raises(ConfigError, match="unknown key 'admin_token'"):
        parse_config({"serve": {"admin_token": "secret"}})
    config = parse_config({"serve": {"admin_token_env": "MY_TOKEN"}})
    monkeypatch.delenv("MY_TOKEN", raising=False)
    assert config.serve.admin_token() is None
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    assert config.serve.admin_token() == "s3cret"


def test_kafka_settings_take_numbers_as_strings():
    config = parse_config({"source": {"kind": "kafka", "kafka": {"settings": {"linger.ms": 5, "acks": "all"}}}})
    assert config.source.kafka.settings == {"linger.ms": "5", "acks": "all"}


def test_model_config_of_each_model():
    config = parse_config({"model": {"name": "fm", "dim": 8, "lr": 0.08, "ttl": "1d", "capacity": 1000},
                           "embedding": {"initial_accumulator": 0.01, "linear_lr": 0.3}})
    fm = model_config(config)
    assert isinstance(fm, FMConfig)
    assert (fm.dim, fm.lr, fm.ttl_seconds, fm.capacity, fm.initial_accumulator, fm.linear_lr) == \
        (8, 0.08, 86400.0, 1000, 0.01, 0.3)
    for name, (_, config_class) in MODELS.items():
        built = model_config(parse_config({"model": {"name": name}}))
        assert type(built) is config_class
        shared = {f.name for f in dataclasses.fields(ModelConfig)} - {"init_std"}
        assert {n: getattr(built, n) for n in shared} == {n: getattr(ModelConfig(), n) for n in shared}
    lr = model_config(parse_config({"model": {"name": "lr"}, "embedding": {"optimizer": "ftrl"}}))
    assert isinstance(lr, LRConfig) and lr.ftrl


@pytest.mark.parametrize("name", ["fm", "deepfm", "dcn"])
def test_an_optimizer_the_model_cannot_use_is_refused_when_parsed(name):
    with pytest.raises(ConfigError, match=f"^embedding.optimizer: model '{name}' supports adagrad, got 'ftrl'$"):
        parse_config({"model": {"name": name}, "embedding": {"optimizer": "ftrl"}})


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizers_no_model_uses_are_not_offered(optimizer):
    expected = f"embedding.optimizer: expected one of 'adagrad' or 'ftrl', got '{optimizer}'"
    with pytest.raises(ConfigError, match=expected):
        parse_config({"model": {"name": "lr"}, "embedding": {"optimizer": optimizer}})


@pytest.mark.parametrize(("data", "line"), [
    ({"model": {"ordinal_levels": [2, 3]}}, "model.ordinal_levels: goes with features.target"),
    ({"features": {"target": "rating"}}, "model.ordinal_levels: goes with features.target"),
    ({"source": {"format": "csv"}}, "source.columns: format 'csv' needs a column mapping"),
    ({"source": {"columns": {"user": "u", "item": "i", "time": "t"}}}, "source.columns: only for format csv"),
    ({"source": {"kind": "kafka", "limit": 5}}, "source.limit: replay only"),
    ({"log": {"retention": "3d"}}, r"log.retention: 3d keeps less than offline retraining reads \(training.offline_"
                                   r"window: the whole log\); set training.offline_window to at most 3d"),
    ({"log": {"retention": "3d"}, "training": {"offline_window": "4d"}}, "log.retention: 3d keeps less"),
])
def test_settings_that_do_not_go_together(data, line):
    with pytest.raises(ConfigError, match="^" + line):
        parse_config(data)


@pytest.mark.parametrize("data", [{"log": {"retention": "7d"}, "training": {"offline_window": "7d"}},
                                  {"log": {"retention": "1d"}, "training": {"offline_interval": None}}])
def test_a_retention_that_keeps_what_offline_retraining_reads_is_taken(data):
    assert parse_config(data).log.retention in (7 * 86_400.0, 86_400.0)


@pytest.mark.parametrize(("data", "line"), [
    ({"log": {"retention": 0}, "training": {"offline_interval": None}}, "log.retention: expected a number > 0, got 0"),
    ({"training": {"offline_window": "0s"}}, "training.offline_window: expected a number > 0, got '0s'"),
])
def test_a_retention_or_an_offline_window_of_nothing_is_refused_naming_its_key(data, line):
    with pytest.raises(ConfigError, match="^" + line):
        parse_config(data)
