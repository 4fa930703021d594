from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.batch import Batch
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.log import EventLog
from freshrec.metrics import logloss
from freshrec.models import DeepFMConfig, ModelConfig, OnlineModel, build_model
from freshrec.train import (
    OfflineConfig,
    OfflineResult,
    OfflineRunner,
    OfflineTrainer,
    OnlineTrainer,
    copy_model,
)
from freshrec.train.offline import OfflineCancelled, _concat, _take

STATIONARY = SimulatorConfig(n_users=300, n_items=100, batch_size=500, total_events=4000, drift=0.0,
                             new_user_rate=0.0, new_item_rate=0.0, seed=3)
SPECS = default_specs(Simulator(STATIONARY).fields, dim=4)


def _batches(config: SimulatorConfig = STATIONARY) -> list[Batch]:
    return [FeaturePipeline(SPECS).build(chunk) for chunk in Simulator(config)]


def _fm() -> OnlineModel:
    return build_model("fm", SPECS, ModelConfig(dim=4, lr=0.05))


def _deepfm() -> OnlineModel:
    return build_model("deepfm", SPECS, DeepFMConfig(dim=4, hidden=(16,)))


def _state(model: OnlineModel) -> tuple[dict, dict]:
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    return dense, {name: table.state_dict() for name, table in model.tables.items()}


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1].keys() == b[1].keys()
            and all(a[1][t].keys() == b[1][t].keys() and all(np.array_equal(a[1][t][k], b[1][t][k]) for k in a[1][t])
                    for t in a[1]))


def _holdout_logloss(model: OnlineModel, batches: list[Batch], fraction: float = 0.1) -> float:
    whole = _concat(batches)
    held = int(np.ceil(len(whole) * fraction))
    holdout = _take(whole, np.arange(len(whole) - held, len(whole)))
    with torch.no_grad():
        p = torch.sigmoid(model.eval()(holdout, train=False))
    return logloss(p.double().numpy(), holdout.labels.numpy())


def test_take_and_concat_keep_the_jagged_rows() -> None:
    batches = _batches(SimulatorConfig(n_users=50, n_items=20, batch_size=70, total_events=200))
    whole = _concat(batches)
    assert len(whole) == 200 and torch.equal(whole.labels, torch.cat([b.labels for b in batches]))
    rows = np.random.default_rng(1).permutation(200)[:150]
    part = _take(whole, rows)
    for key in whole.sparse.keys():
        everything = [row for b in batches for row in b.sparse[key].to_list()]
        assert part.sparse[key].to_list() == [everything[r] for r in rows]
    assert torch.equal(part.dense, whole.dense[rows]) and torch.equal(part.ts, whole.ts[rows])


def test_offline_training_improves_the_holdout_over_epoch_one() -> None:
    result = OfflineTrainer(_fm, OfflineConfig(epochs=3)).learn(_batches())
    losses = [loss for loss, _ in result.history]
    assert result.rows == 4000 and result.holdout_rows == 400 and result.epochs_run == 3
    assert losses[0] > losses[1] > losses[3] and result.best_epoch == 3
    assert result.holdout_logloss == losses[3] and result.holdout_auc > result.history[1][1] > 0.5
    assert result.seconds > 0 and result.cpu_seconds > 0 and not result.model.training
    assert _holdout_logloss(result.model, _batches()) == pytest.approx(result.holdout_logloss, rel=1e-6)


def test_early_stopping_keeps_the_best_epoch_when_the_holdout_gets_worse() -> None:
    batches = _batches()  # the deep part overfits after one epoch
    result = OfflineTrainer(_deepfm, OfflineConfig(epochs=5, patience=1)).learn(batches)
    losses = [loss for loss, _ in result.history]
    assert result.epochs_run == 2 and result.best_epoch == 1 and losses[2] > losses[1]
    assert result.holdout_logloss == losses[1]
    assert _holdout_logloss(result.model, batches) == pytest.approx(losses[1], rel=1e-6)  # the copy, not epoch 2
    longer = OfflineTrainer(_deepfm, OfflineConfig(epochs=5, patience=2)).learn(batches)
    assert longer.epochs_run == 3 and longer.best_epoch == 1  # patience counts epochs without a better holdout


def test_without_holdout_every_epoch_runs_and_the_last_is_kept() -> None:
    result = OfflineTrainer(_deepfm, OfflineConfig(epochs=2, holdout_fraction=0.0)).learn(_batches()[:2])
    assert (result.epochs_run, result.best_epoch, result.holdout_rows) == (2, 2, 0)
    assert np.isnan(result.holdout_logloss) and np.isnan(result.holdout_auc)


def test_warm_start_begins_at_the_online_model_and_never_changes_it() -> None:
    batches = _batches()
    online = OnlineTrainer(_fm())
    for batch in batches[:4]:
        online.learn(batch)
    before = _state(online.model)
    result = OfflineTrainer(_fm, OfflineConfig(epochs=2)).learn(batches, warm_from=online.model)
    assert result.history[0][0] == pytest.approx(_holdout_logloss(online.model, batches), rel=1e-6)
    assert result.history[0][0] < np.log(2) - 0.1  # the online model knows something already
    cold = OfflineTrainer(_fm, OfflineConfig(epochs=2, warm_start=False)).learn(batches, warm_from=online.model)
    assert cold.history[0][0] == pytest.approx(np.log(2), abs=1e-3)  # warm_start=False: a fresh build
    assert _same(before, _state(online.model)) and result.model is not online.model


def test_copy_model_is_a_full_independent_copy() -> None:
    trainer = OnlineTrainer(_fm())
    trainer.learn(_batches()[0])
    copy = copy_model(trainer.model, _fm)
    assert _same(_state(trainer.model), _state(copy))
    trainer.learn(_batches()[1])
    assert not _same(_state(trainer.model), _state(copy))
    with pytest.raises(ValueError, match="other tables"):
        copy_model(trainer.model, lambda: build_model("deepfm", SPECS, ModelConfig(dim=8)))


def test_same_seed_same_result_bit_for_bit() -> None:
    batches = _batches()
    config = OfflineConfig(epochs=2, seed=7)
    a, b = (OfflineTrainer(_deepfm, config).learn(batches) for _ in range(2))
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert _same(_state(a.model), _state(b.model))
    other = OfflineTrainer(_deepfm, OfflineConfig(epochs=2, seed=8)).learn(batches)
    assert other.history[1] != a.history[1]  # another shuffle


def test_learn_log_and_submit_log_read_the_range_from_the_event_log(tmp_path: Path) -> None:
    sim = Simulator(STATIONARY)
    with EventLog(tmp_path / "log", sim.fields) as log:
        for chunk in sim:
            log.append(chunk)
        log.flush()
        start = STATIONARY.start_ts
        offline = OfflineTrainer(_fm, OfflineConfig(epochs=1))
        result = offline.learn_log(log, FeaturePipeline(SPECS), start, start + 2.0)
        with OfflineRunner(offline) as runner:  # the worker reads through a reader of its own
            future = runner.submit_log(EventLog(tmp_path / "log", sim.fields), FeaturePipeline(SPECS),
                                       start, start + 2.0)
            in_worker = future.result(timeout=60)
    assert result.rows == 2000  # 1000 events per second of event time
    assert in_worker.history == result.history and _same(_state(in_worker.model), _state(result.model))


def test_the_runner_trains_in_another_thread_while_the_caller_keeps_learning() -> None:
    batches = _batches()
    online = OnlineTrainer(_fm())
    online.learn(batches[0])
    release, done = threading.Event(), []

    def on_done(result: OfflineResult) -> None:
        release.wait(30)  # the job cannot finish before the caller has learned on
        done.append((threading.current_thread().name, result.epochs_run))

    with OfflineRunner(OfflineTrainer(_fm, OfflineConfig(epochs=1)), on_done) as runner:
        future = runner.submit(batches[:6], warm_from=online.model)
        for batch in batches[1:]:  # the caller goes on while the worker trains
            online.learn(batch)
        assert runner.busy and not future.done()
        release.set()
        result = future.result(timeout=60)
    assert done == [(done[0][0], 1)] and done[0][0].startswith("freshrec-offline")
    assert result.rows == 3000 and not runner.busy and online.batches == 8


def test_closing_the_runner_with_cancel_stops_the_retraining_and_drops_the_queued_ones() -> None:
    batches = _batches()
    endless = OfflineConfig(epochs=100_000, patience=100_000)   # would run for hours
    runner = OfflineRunner(OfflineTrainer(_fm, endless))
    running, queued = runner.submit(batches), runner.submit(batches)
    runner.close(wait=False, cancel=True)
    assert queued.cancelled()
    assert running.cancelled() or isinstance(running.exception(timeout=300), OfflineCancelled)   # not hours
    assert not runner.busy


def test_bad_offline_config() -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        OfflineConfig(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="epochs"):
        OfflineConfig(epochs=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        OfflineTrainer(_fm).learn([])
