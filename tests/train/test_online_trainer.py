from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.engine import train_online
from freshrec.events.event import FieldKind
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, FeatureSpec, default_specs
from freshrec.models import DeepFMConfig, FMConfig, ModelConfig, OnlineFM, build_model
from freshrec.train import OnlineTrainer, TrainerConfig

CAT, DENSE = FieldKind.CATEGORICAL, FieldKind.DENSE


def _batch(users: list[int], items: list[int], labels: list[float], dense: list[float] | None = None,
           ts: float = 0.0) -> Batch:
    rows = len(users)
    return Batch(SparseFeatures(["user_id", "item_id"], torch.tensor(users + items, dtype=torch.int64),
                                torch.ones(2 * rows, dtype=torch.int32)),
                 dense=torch.tensor(dense or [0.5] * rows, dtype=torch.float32).unsqueeze(1),
                 labels=torch.tensor(labels), ts=torch.full((rows,), ts, dtype=torch.float64),
                 dense_keys=("x",))


SPECS = [FeatureSpec("user_id", CAT), FeatureSpec("item_id", CAT), FeatureSpec("x", DENSE)]


def _run(name: str, seed: int) -> tuple[dict, OnlineTrainer]:
    sim = Simulator(SimulatorConfig(batch_size=2_000, total_events=6_000, seed=1))
    specs = default_specs(sim.fields, dim=8)
    trainer = OnlineTrainer(build_model(name, specs, ModelConfig(dim=8, seed=seed)), TrainerConfig(seed=seed))
    return train_online(sim, FeaturePipeline(specs), trainer, batch_size=256), trainer


@pytest.mark.parametrize("name", ["fm", "deepfm", "dcn", "lr"])
def test_same_seed_same_data_same_metrics_bit_for_bit(name: str) -> None:
    (first, a), (second, b) = _run(name, seed=5), _run(name, seed=5)
    keys = ("auc", "logloss", "ne", "calibration", "mean_prediction", "auc_last20", "live_ids")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    for name_, table in a.model.tables.items():
        assert np.array_equal(table.state_dict()["rows"], b.model.tables[name_].state_dict()["rows"])
    assert 0.5 < first["auc"] < 1.0 and first["skipped_batches"] == 0


def test_another_seed_gives_another_run() -> None:
    assert _run("deepfm", seed=1)[0]["logloss"] != _run("deepfm", seed=2)[0]["logloss"]


def test_new_ids_mid_stream_get_rows_and_move_toward_their_rate() -> None:
    rng = np.random.default_rng(0)
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4)))
    for step in range(30):  # an established stream: users 1..50, items 100..109, rate 0.5
        users, items = rng.integers(1, 51, 64).tolist(), rng.integers(100, 110, 64).tolist()
        trainer.learn(_batch(users, items, rng.integers(0, 2, 64).astype(float).tolist(), ts=step))
    table = trainer.model.table
    live = table.live
    hot, cold = 7_001, 7_002  # two items never seen: one liked 90%, one 10%
    probe = _batch([1, 1], [hot, cold], [np.nan, np.nan])
    assert (table.slots(np.array([hot, cold]), 0.0, train=False) < 0).all()
    start = trainer.predict(probe)
    for step in range(30, 60):
        users = rng.integers(1, 51, 64).tolist()
        items = [hot] * 32 + [cold] * 32
        labels = (rng.random(32) < 0.9).tolist() + (rng.random(32) < 0.1).tolist()
        trainer.learn(_batch(users, items, [float(y) for y in labels], ts=step))
    assert (table.slots(np.array([hot, cold]), 0.0, train=False) >= 0).all() and table.live == live + 2
    end = trainer.predict(probe)
    assert abs(float(start[0]) - 0.5) < 0.1 and abs(float(start[1]) - 0.5) < 0.1
    assert float(end[0]) > 0.7 and float(end[1]) < 0.3  # observed rates 0.9 and 0.1


@pytest.mark.parametrize("name, config", [("deepfm", DeepFMConfig(dim=4, hidden=(8,))), ("fm", FMConfig(dim=4))])
def test_a_non_finite_batch_changes_nothing(caplog: pytest.LogCaptureFixture, name: str, config: ModelConfig) -> None:
    trainer = OnlineTrainer(build_model(name, SPECS, config))
    for step in range(5):
        trainer.learn(_batch([1, 2, 3], [10, 11, 12], [1.0, 0.0, 1.0], ts=step))
    with torch.no_grad():  # non-zero dense weights, so inf * w is inf, not only 0 * inf
        trainer.model.dense_weight.fill_(0.1)
    params = [p.detach().clone() for p in trainer.model.parameters()]
    rows = trainer.model.table.state_dict()
    optimizer_state = [(k, v.clone()) for s in trainer.optimizer.state.values() for k, v in s.items()]
    metrics = trainer.metrics.summary()
    with caplog.at_level(logging.WARNING, logger="freshrec.train.online"):
        step = trainer.learn(_batch([1, 2, 3], [10, 11, 12], [1.0, 0.0, 1.0], dense=[0.5, float("inf"), 0.5], ts=9))
    assert step["skipped"] and trainer.skipped_batches == 1 and "not finite" in caplog.text
    for before, after in zip(params, trainer.model.parameters()):
        assert torch.equal(before, after)
    after_rows = trainer.model.table.state_dict()
    for key in ("ids", "rows", "state.accum"):
        assert np.array_equal(rows[key], after_rows[key])
    assert trainer.model.table.version == 5
    after_state = [(k, v) for s in trainer.optimizer.state.values() for k, v in s.items()]
    assert [k for k, _ in after_state] == [k for k, _ in optimizer_state]
    assert all(torch.equal(v, w) for (_, v), (_, w) in zip(after_state, optimizer_state))
    assert trainer.metrics.summary() == metrics
    assert not trainer.learn(_batch([1], [10], [1.0], ts=10))["skipped"]  # the stream goes on
    assert trainer.fused == (name == "fm")


def test_the_fused_fm_step_is_the_module_step() -> None:
    """`TrainerConfig.fused` changes the speed of an FM's step, not its result (chunks of one
    micro-batch: the fused step admits a chunk's new ids at once, the module a micro-batch's)."""
    runs = {}
    for fused in (True, False):
        sim = Simulator(SimulatorConfig(batch_size=256, total_events=6_144, seed=1))
        specs = default_specs(sim.fields, dim=8)
        trainer = OnlineTrainer(build_model("fm", specs, FMConfig(dim=8, lr=0.1)), TrainerConfig(fused=fused))
        figures = train_online(sim, FeaturePipeline(specs), trainer, batch_size=256)
        runs[fused] = (trainer, figures)
    (fast, fast_figures), (module, module_figures) = runs[True], runs[False]
    assert fast.fused and not module.fused
    assert fast_figures["auc"] == pytest.approx(module_figures["auc"], abs=1e-4)
    assert fast_figures["logloss"] == pytest.approx(module_figures["logloss"], abs=1e-5)
    torch.testing.assert_close(fast.model.dense_weight, module.model.dense_weight, atol=1e-5, rtol=0)
    ids = module.model.table.state_dict()["ids"]
    fast_rows = fast.model.table.gather(fast.model.table.slots(ids, 0.0, train=False))
    module_rows = module.model.table.gather(module.model.table.slots(ids, 0.0, train=False))
    difference = (fast_rows - module_rows).abs()  # float32 sums in another order, over 24 steps
    assert float(difference.max()) < 5e-4 and float((difference > 1e-5).float().mean()) < 1e-3


def test_predict_inserts_nothing_and_learn_reports_pre_update_scores() -> None:
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4)))
    batch = _batch([1, 2], [10, 11], [1.0, 0.0])
    assert torch.equal(trainer.predict(batch), torch.full((2,), 0.5)) and trainer.model.live_ids == 0
    step = trainer.learn(batch)
    assert trainer.model.live_ids == 4
    trainer.learn(batch)
    second = trainer.learn(batch)["predictions"]
    assert float(second[0]) > float(step["predictions"][0]) and float(second[1]) < float(step["predictions"][1])
    assert trainer.metrics.summary()["rows"] == 6


def test_mse_loss_for_ratings() -> None:
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4, loss="mse", lr=0.5)))
    batch = _batch([1, 2], [10, 11], [4.0, 2.0])
    for _ in range(60):
        trainer.learn(batch)
    assert trainer.predict(batch).tolist() == pytest.approx([4.0, 2.0], abs=0.3)
    assert trainer.squared_error > 0


def test_bad_trainer_config() -> None:
    with pytest.raises(ValueError, match="dense_optimizer"):
        TrainerConfig(dense_optimizer="lbfgs")
