"""`RecommenderAutoML`: a search returns its best configuration and model, resumes from its study
file without repeating finished trials, refuses a study file in use or run on other settings."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from freshrec.automl import RecommenderAutoML, Resources, Stream
from freshrec.automl.trials import STALE, STUDY_NAME
from freshrec.config import ConfigError, load_config, parse_config
from freshrec.events.simulator import Simulator, SimulatorConfig

SPACE = {"model.dim": [4, 8], "model.lr": {"low": 0.02, "high": 0.3, "log": True}, "fusion.strategy": ["none"]}
BASE = parse_config({"model": {"dim": 4}, "source": {"chunk_rows": 500}})


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream.read(Simulator(SimulatorConfig(total_events=4000, batch_size=1000)))


def automl(tmp_path, trials: int, **options) -> RecommenderAutoML:
    return RecommenderAutoML(options.pop("space", SPACE), Resources(cpus=1), config=BASE, trials=trials,
                             study=tmp_path / "study.db", **options)


def test_a_search_gives_its_best_configuration_model_and_the_held_back_comparison(tmp_path, stream):
    result = automl(tmp_path, 4).search(stream)
    values = [t.value for t in result.study.get_trials(states=(TrialState.COMPLETE,))]
    assert result.best_value == min(values) and result.trials["finished"] == 4
    assert result.best_config.model.dim == result.best_params["model.dim"]
    assert result.best_config.model.lr == result.best_params["model.lr"]
    assert result.holdout["rows"] == 800
    assert 0.5 < result.holdout["best"]["auc"] < 1 and 0.5 < result.holdout["defaults"]["auc"] < 1
    assert result.best_model.live_ids > 0
    path = tmp_path / "best.yaml"
    path.write_text(result.config_yaml("# best\n"))
    assert load_config(path) == result.best_config   # what `freshrec run --config` takes
    assert yaml.safe_load(path.read_text())["fusion"] == {"strategy": "none"}


def test_a_resumed_search_keeps_its_finished_trials_and_runs_the_rest(tmp_path, stream):
    first = automl(tmp_path, 3).search(stream)
    kept = {t.number: (t.params, t.value, t.datetime_complete) for t in first.study.get_trials()}
    second = automl(tmp_path, 5).search(stream)
    trials = second.study.get_trials()
    assert len(trials) == 5 and second.trials["this_search"] == 2
    assert {t.number: (t.params, t.value, t.datetime_complete) for t in trials[:3]} == kept


def test_trials_left_running_by_a_dead_search_are_marked_failed(tmp_path, stream):
    automl(tmp_path, 2).search(stream)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.ask()   # a trial that was running when its search died
    result = automl(tmp_path, 3).search(stream)
    states = [t.state for t in result.study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3
    failed = next(t for t in result.study.get_trials() if t.state == TrialState.FAIL)
    assert failed.user_attrs["reason"] == STALE and result.trials["finished"] == 3


def test_a_study_is_resumed_only_with_its_own_settings(tmp_path, stream):
    automl(tmp_path, 1).search(stream)
    with pytest.raises(ConfigError, match="the study was run with another space"):
        automl(tmp_path, 2, space={**SPACE, "model.dim": [4, 8, 16]}).search(stream)
    with pytest.raises(ConfigError, match="the study was run with another metric"):
        automl(tmp_path, 2, metric="auc").search(stream)
    with pytest.raises(ConfigError, match="the study was run with another data"):
        automl(tmp_path, 2).search(stream.head(0.5))


def test_a_study_in_use_is_refused(tmp_path, stream):
    from freshrec.automl.trials import StudyLock

    with StudyLock(tmp_path / "study.db"), pytest.raises(ConfigError, match="another search is using it"):
        automl(tmp_path, 1).search(stream)


def test_the_options_are_checked_at_once(tmp_path):
    for options, line in [({"trials": 0}, "trials: expected a number >= 1, got 0"),
                          ({"trials": 1, "sampler": "grid"}, "sampler: expected one of tpe, random, qmc"),
                          ({"trials": 1, "metric": "ndcg"}, "metric: expected one of logloss, auc"),
                          ({"trials": 1, "holdout": 1.0}, "holdout: expected a fraction in (0, 1)")]:
        trials = options.pop("trials")
        with pytest.raises(ConfigError, match=line.replace("(", r"\(").replace(")", r"\)")):
            automl(tmp_path, trials, **options)


def test_pruning_stops_trials_behind_the_median(tmp_path, stream):
    space = {"model.lr": {"low": 0.001, "high": 1.0, "log": True}, "fusion.strategy": ["none"]}
    result = automl(tmp_path, 14, space=space, sampler="random", every=400).search(stream)
    pruned = result.study.get_trials(states=(TrialState.PRUNED,))
    assert result.trials["pruned"] == len(pruned) > 0
    assert all(max(t.intermediate_values) < 3200 for t in pruned)   # stopped before the end of the search part


def test_trials_run_in_parallel_worker_processes(tmp_path, stream):
    automl = RecommenderAutoML(SPACE, Resources(cpus=2), config=BASE, trials=4, study=tmp_path / "study.db")
    result = automl.search(stream)
    assert 4 <= result.trials["finished"] <= 5   # a second worker may start one trial as the other ends the last
    assert result.trials["fail"] == 0
