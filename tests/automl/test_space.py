"""The search space: every bad space refused with one line naming the key, before any trial runs."""

from __future__ import annotations

import pytest

from freshrec.automl import SearchSpace
from freshrec.config import ConfigError, parse_config


@pytest.mark.parametrize("space, line", [
    ({"embed_dim": []}, "search_space.embed_dim: an empty list of choices"),
    ({"model.lr": {"low": 0.5, "high": 0.1}}, "search_space.model.lr: low 0.5 is above high 0.1"),
    ({"model.dimension": [8, 16]}, "search_space.model.dimension: not a parameter freshrec tunes"),
    ({"serve.port": [8000, 8001]}, "search_space.serve.port: not a parameter freshrec tunes"),
    ({"model.dim": [8, 0]}, "search_space.model.dim: expected a number >= 1, got 0"),
    ({"model.name": ["fm", "gbdt"]}, "search_space.model.name: expected one of 'lr', 'fm', 'deepfm' or 'dcn', "
                                     "got 'gbdt'"),
    ({"model.lr": {"low": 0, "high": 0.1, "log": True}}, "search_space.model.lr: a log range needs low > 0"),
    ({"model.lr": {"low": 0.1}}, "search_space.model.lr: a range needs high"),
    ({"model.lr": {"low": 0.1, "high": 1, "scale": "log"}}, "search_space.model.lr: unknown range key 'scale'"),
    ({"model.lr": 0.1}, "search_space.model.lr: expected a list of choices or a mapping {low, high}, got 0.1"),
    ({"layer_width": [32]}, "search_space.layer_width: needs num_layers beside it"),
    ({"num_layers": [1, 2], "model.hidden": [[8]]}, "search_space.num_layers: model.hidden is tuned too"),
    ({"num_layers": [-1]}, "search_space.num_layers: expected an integer >= 0, got -1"),
    ({"labels": [{}, {"serve.port": 1}]}, "search_space.labels: serve.port is not a key freshrec tunes"),
    ({}, "search_space: no parameter to tune"),
])
def test_a_bad_space_is_refused_naming_its_key(space, line):
    with pytest.raises(ConfigError) as refused:
        SearchSpace(space)
    assert len(refused.value.problems) == 1 and str(refused.value).startswith(line), str(refused.value)


def test_values_are_checked_against_the_base_configuration():
    base = parse_config({"model": {"name": "lr"}, "embedding": {"optimizer": "ftrl"}})
    with pytest.raises(ConfigError, match=r"^search_space.model.name: "):
        SearchSpace({"model.name": ["lr", "fm"]}, base)   # ftrl goes with lr only


def test_the_article_names_set_configuration_keys():
    space = SearchSpace({"embed_dim": [64], "num_layers": [2], "layer_width": [32], "learning_rate": [1e-3],
                         "batch_size": [16], "fusion": ["rebase"],
                         "labels": [{}, {"features.target": "rating", "model.ordinal_levels": [3, 5]}]})
    params = {"embed_dim": 64, "num_layers": 2, "layer_width": 32, "learning_rate": 1e-3, "batch_size": 16,
              "fusion": "rebase", "labels": {"features.target": "rating", "model.ordinal_levels": [3, 5]}}
    assert space.overrides(params) == {"model.dim": 64, "model.lr": 1e-3, "training.online_batch_size": 16,
                                       "fusion.strategy": "rebase", "features.target": "rating",
                                       "model.ordinal_levels": [3, 5], "model.hidden": [32, 32]}
    settings = space.config(params)
    assert settings.model.hidden == (32, 32) and settings.model.ordinal_levels == (3.0, 5.0)


def test_integer_and_log_ranges_draw_inside_their_bounds():
    import optuna

    space = SearchSpace({"model.dim": {"low": 4, "high": 64, "log": True}, "model.lr": {"low": 0.01, "high": 0.5},
                         "training.online_batch_size": {"low": 8, "high": 64, "step": 8},
                         "model.hidden": [[16], [32, 16]]})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert isinstance(params["model.dim"], int) and 4 <= params["model.dim"] <= 64
        assert 0.01 <= params["model.lr"] <= 0.5 and params["training.online_batch_size"] % 8 == 0
        assert params["model.hidden"] in ([16], [32, 16])
        space.config(params)   # every draw is a valid configuration
