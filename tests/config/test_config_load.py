"""`load_config` and `show_config`: the article's file, every kind of error, and the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ARTICLE

from freshrec.config import ConfigError, FreshrecConfig, load_config, parse_config, show_config

SECTIONS = ("source, join, features, model, embedding, training, sync, serve, content, retrieval, experiment, fusion, "
            "log, gpu, autoscale, devices, alerts")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "freshrec.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """The lines of the `ConfigError` that loading `text` raises (each starts with the file's path)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    lines = str(error.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert error.value.source == str(path)
    assert [line.removeprefix(f"{path}: ") for line in lines] == list(error.value.problems)
    return list(error.value.problems)


def test_article_file_loads_verbatim(tmp_path):
    config = load_config(write(tmp_path, ARTICLE))
    assert config.training.offline_interval == 21600.0
    assert config.training.online_batch_size == 512
    assert (config.gpu.type, config.gpu.count, config.gpu.autoscale) == ("A100", 8, True)
    assert config.model == FreshrecConfig().model   # the rest defaults


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_gives_the_defaults(tmp_path, text):
    assert load_config(write(tmp_path, text)) == FreshrecConfig()


def test_unknown_keys_at_top_level_and_nested(tmp_path):
    assert problems_of(tmp_path, "gpus: 8\n") == [f"gpus: unknown key 'gpus' (allowed: {SECTIONS})"]
    assert problems_of(tmp_path, "gpu:\n  kind: A100\n") == \
        ["gpu.kind: unknown key 'kind' (allowed: type, count, device, precision, autoscale)"]
    (line,) = problems_of(tmp_path, "source:\n  kafka:\n    brokers: x\n")
    assert line == ("source.kafka.brokers: unknown key 'brokers' "
                    "(allowed: bootstrap, topic, group, settings, idle_timeout, max_delay)")
    (line,) = problems_of(tmp_path, "features:\n  fields:\n    user_id: {table: u, size: 8}\n")
    assert line == "features.fields.user_id.size: unknown key 'size' (allowed: table)"


@pytest.mark.parametrize(("text", "expected"), [
    ("training:\n  online_batch_size: many\n", "training.online_batch_size: expected an integer, got 'many'"),
    ("training:\n  online_batch_size: 1.5\n", "training.online_batch_size: expected an integer, got 1.5"),
    ("gpu:\n  autoscale: maybe\n", "gpu.autoscale: expected true or false, got 'maybe'"),
    ("gpu:\n  count: -1\n", "gpu.count: expected a number >= 0, got -1"),
    ("training:\n  holdout_fraction: 1\n", "training.holdout_fraction: expected a number < 1.0, got 1"),
    ("model:\n  name: gbdt\n", "model.name: expected one of 'lr', 'fm', 'deepfm' or 'dcn', got 'gbdt'"),
    ("fusion:\n  strategy: average\n", "fusion.strategy: expected one of 'hedge', 'rebase' or 'none', got 'average'"),
    ("source:\n  format: tsv\n", "source.format: expected one of 'criteo', 'avazu', 'movielens-100k', "
                                 "'open-bandit', 'csv', 'parquet' or 'simulator', got 'tsv'"),
    ("training: 5\n", "training: expected a mapping with keys online_batch_size, online_batch_window, "
                      "offline_interval, offline_events, offline_window, dense_lr, checkpoint_events, epochs, "
                      "holdout_fraction, patience, warm_start, workers, max_restarts, got 5"),
    ("source:\n  kafka:\n    settings: {linger.ms: [5]}\n",
     "source.kafka.settings['linger.ms']: expected a string, got a list"),
])
def test_wrong_values_name_the_key_the_value_and_what_is_allowed(tmp_path, text, expected):
    assert problems_of(tmp_path, text) == [expected]


@pytest.mark.parametrize(("key", "value"), [("training.offline_interval", "6x"), ("training.offline_interval", "-1h"),
                                            ("sync.sync_interval", "h"), ("model.ttl", "soon"),
                                            ("log.roll_seconds", "-5")])
def test_bad_durations(tmp_path, key, value):
    section, name = key.split(".")
    (line,) = problems_of(tmp_path, f"{section}:\n  {name}: '{value}'\n")
    assert line.startswith(f"{key}: expected a non-negative duration like 30s, 5m, 6h, 1d ")
    assert line.endswith(f"got {value!r}")


def test_all_problems_are_listed_one_line_each(tmp_path):
    lines = problems_of(tmp_path, "foo: 1\ngpu:\n  count: -1\ntraining:\n  offline_interval: 6x\n  epochs: 0\n")
    assert [line.split(":")[0] for line in lines] == \
        ["training.offline_interval", "training.epochs", "gpu.count", "foo"]


def test_yaml_syntax_errors_name_the_line(tmp_path):
    (line,) = problems_of(tmp_path, "gpu:\n  type: A100\n count: 8\n")
    assert line.startswith("line 3, column 2: invalid YAML: ")
    (line,) = problems_of(tmp_path, "gpu:\n  type: [A100\n")
    assert line.startswith("line 3, column 1: invalid YAML: expected ',' or ']'")


def test_a_key_given_twice_is_an_error_but_merge_keys_work(tmp_path):
    assert problems_of(tmp_path, "gpu:\n  count: 1\n  count: 2\n") == \
        ["line 3, column 3: invalid YAML: duplicate key 'count'"]
    config = load_config(write(tmp_path, "gpu: &big {type: A100, count: 8}\nsync: {}\n"))
    assert config.gpu.count == 8


@pytest.mark.parametrize(("text", "kind"), [("- gpu\n- training\n", "a list"), ("just text\n", "'just text'"),
                                            ("42\n", "42")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    assert problems_of(tmp_path, text) == [f"top level: expected a mapping with keys {SECTIONS}, got {kind}"]


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "absent.yaml")
    assert str(error.value) == f"{tmp_path / 'absent.yaml'}: no such config file"
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"gpu:\n  type: \xe9\n")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "latin1.yaml")


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError, match="^gpu.count: expected a number >= 0, got -3$"):
        parse_config({"gpu": {"count": -3}})


def test_show_config_round_trips_with_defaults_and_duration_spellings(tmp_path):
    config = load_config(write(tmp_path, ARTICLE + "sync:\n  sync_interval: 250ms\n  full_interval: 1.5h\n"
                               "model: {ttl: 7d, capacity: 100000}\nsource:\n  data: ../data/ml-100k\n"
                               "  kafka: {settings: {linger.ms: 5, sasl.password: 'yes'}}\n"
                               "features: {fields: {genres: {table: item_id}}}\n"))
    text = show_config(config)
    data = yaml.safe_load(text)
    assert data["training"]["offline_interval"] == "6h"
    assert data["sync"] == {"sync_interval": "250ms", "full_interval": "90m", "share": None}
    assert data["model"]["ttl"] == "7d"
    assert data["serve"]["port"] == 8000   # defaults are written out
    assert "  offline_interval: 6h  # Event time between offline retrainings (null: " in text
    assert data["source"]["kafka"]["settings"] == {"linger.ms": "5", "sasl.password": "<hidden>"}
    assert load_config(write(tmp_path, show_config(config, secrets=True))) == config
    assert load_config(write(tmp_path, show_config(FreshrecConfig()))) == FreshrecConfig()
