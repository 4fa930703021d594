"""Eviction in `learn_stream`: a table's capacity and TTL take effect every `evict_every` rows, at
unit ends fixed by the stream (the lookahead worker holds there), so two runs, and a run restored
from a save between two evictions, end with the same tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.engine.trainer_state import load_trainer, save_trainer
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.online import Unit

SPECS = default_specs(Simulator.fields, dim=4)


def _units(count: int = 12) -> list[Unit]:
    sim = Simulator(SimulatorConfig(batch_size=600, total_events=600 * count, seed=7))
    pipeline = FeaturePipeline(SPECS)
    return [Unit.of(pipeline.build(chunk), 200) for chunk in sim]   # micro-batches of 200


def _trainer(model: str, **table) -> OnlineTrainer:
    return OnlineTrainer(build_model(model, SPECS, ModelConfig(dim=4, **table)), TrainerConfig(evict_every=1500))


def _state(trainer: OnlineTrainer) -> dict[str, np.ndarray]:
    state = trainer.model.table.state_dict()
    order = np.argsort(state["ids"])
    return {"ids": state["ids"][order], "rows": state["rows"][order]}


@pytest.mark.parametrize("model", ["fm", "deepfm"])   # the fused step with its lookahead; the module path
def test_capacity_holds_at_every_eviction_and_runs_agree(model: str) -> None:
    units = _units()
    trainer = _trainer(model, capacity=300)
    live, held = [], []
    for _unit, _, was_held in trainer.learn_stream(units):
        live.append(trainer.model.table.live)
        held.append(was_held)
    evictions = [2, 5, 8, 11]     # units of 600 rows: the count reaches 1,500 at every third, then starts over
    assert all(held[i] for i in evictions)
    assert all(live[i] <= 300 for i in evictions) and max(live) > 300     # grows between evictions
    assert trainer.report()["evicted_ids"] > 0
    again = _trainer(model, capacity=300)
    for _ in again.learn_stream(units):
        pass
    mine, theirs = _state(trainer), _state(again)
    assert np.array_equal(mine["ids"], theirs["ids"]) and np.array_equal(mine["rows"], theirs["rows"])


def test_a_restored_trainer_evicts_where_the_uninterrupted_one_does(tmp_path: Path) -> None:
    units = _units()
    whole = _trainer("fm", ttl_seconds=2.0)
    for _ in whole.learn_stream(units):
        pass
    first = _trainer("fm", ttl_seconds=2.0)
    for _ in first.learn_stream(units[:4]):          # one eviction (after the third unit), 600 rows since
        pass
    assert first.rows_since_evict == 600
    save_trainer(first, tmp_path)
    restored = load_trainer(tmp_path)
    assert (restored.rows_since_evict, restored.newest_ts) == (first.rows_since_evict, first.newest_ts)
    for _ in restored.learn_stream(units[4:]):
        pass
    mine, theirs = _state(whole), _state(restored)
    assert whole.report()["evicted_ids"] > 0
    assert np.array_equal(mine["ids"], theirs["ids"]) and np.array_equal(mine["rows"], theirs["rows"])
    batch = units[-1].batches[-1]
    assert torch.equal(whole.predict(batch), restored.predict(batch))
