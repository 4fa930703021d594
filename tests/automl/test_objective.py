"""The prequential objective: the same scores as the product's online loop, fusion as configured,
a stop from the report callback leaves no thread behind."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from freshrec.automl import Stream, prequential
from freshrec.config import parse_config, with_overrides
from freshrec.engine import train_online
from freshrec.engine.build import feature_specs, model_config, trainer_config
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline
from freshrec.models import build_model
from freshrec.train import OnlineTrainer

BASE = parse_config({"model": {"dim": 4}, "source": {"chunk_rows": 1000},
                     "training": {"offline_interval": "2s", "holdout_fraction": 0, "epochs": 1}})


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream.read(Simulator(SimulatorConfig(total_events=6000, batch_size=1500)))


def test_without_fusion_it_scores_what_the_online_loop_scores(stream):
    settings = with_overrides(BASE, {"fusion.strategy": "none"})
    specs = feature_specs(settings, stream.fields)
    trainer = OnlineTrainer(build_model("fm", specs, model_config(settings)), trainer_config(settings))
    figures = train_online(stream.replay(1000), FeaturePipeline(specs), trainer, 512, batch_window=0.001)
    scored = prequential(settings, stream)
    assert len(scored.scores) == len(stream) == figures["rows"]
    assert scored.auc() == pytest.approx(figures["auc"], abs=1e-3)
    assert scored.logloss() == pytest.approx(figures["logloss"], abs=1e-4)
    assert type(scored.model).__name__ == "OnlineFM" and scored.model.live_ids == trainer.model.live_ids


def test_the_fusion_strategy_changes_what_is_scored(stream):
    online = prequential(with_overrides(BASE, {"fusion.strategy": "none"}), stream).scores
    hedge = prequential(BASE, stream).scores
    rebase = prequential(with_overrides(BASE, {"fusion.strategy": "rebase"}), stream).scores
    first = 1000   # the first chunk comes before any retraining: the same for all three
    assert np.array_equal(online[:first], hedge[:first]) and np.array_equal(online[:first], rebase[:first])
    assert not np.allclose(online[first:], hedge[first:]) and not np.allclose(online[first:], rebase[first:])
    assert np.array_equal(rebase, prequential(with_overrides(BASE, {"fusion.strategy": "rebase"}), stream).scores)


def test_a_stop_from_the_report_ends_the_run_and_its_reader(stream):
    class Stop(Exception):
        pass

    def report(rows, value):
        seen.append((rows, value))
        if rows >= 2000:
            raise Stop

    seen: list = []
    threads = threading.active_count()
    with pytest.raises(Stop):
        prequential(with_overrides(BASE, {"fusion.strategy": "none"}), stream, report, every=1000)
    assert [rows for rows, _ in seen] == [1000, 2000] and all(0 < value < 1 for _, value in seen)
    assert threading.active_count() == threads


def test_the_auc_metric_is_reported_when_asked(stream):
    seen: list = []
    scored = prequential(with_overrides(BASE, {"fusion.strategy": "none"}), stream,
                         lambda rows, value: seen.append(value), every=3000, metric="auc")
    assert seen[-1] == pytest.approx(scored.auc()) and scored.value("auc") == seen[-1]


def test_the_reported_value_is_taken_over_the_trailing_window(stream):
    seen: list = []
    scored = prequential(with_overrides(BASE, {"fusion.strategy": "none"}), stream,
                         lambda rows, value: seen.append((rows, value)), every=1000, window=1500)
    assert [rows for rows, _ in seen] == [1000, 2000, 3000, 4000, 5000, 6000]
    assert seen[-1][1] == pytest.approx(scored.logloss(4500)) and seen[-1][1] != pytest.approx(scored.logloss())
