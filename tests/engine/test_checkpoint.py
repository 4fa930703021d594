"""Incremental checkpoints: a chain of a whole checkpoint and increments restores the trainer
exactly (rows, optimizer state, sightings, admission sketch, evicted ids, generators), and only the
newest two chains are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freshrec.engine.checkpoint import Checkpoint, CheckpointStore
from freshrec.engine.trainer_state import base_of
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer


def _batches(count: int) -> list:
    sim = Simulator(SimulatorConfig(batch_size=300, total_events=300 * count, seed=4))
    pipeline = FeaturePipeline(default_specs(sim.fields, dim=4))
    return [pipeline.build(chunk) for chunk in sim]


def _tables(trainer: OnlineTrainer) -> dict[str, dict[str, np.ndarray]]:
    """Each table's state with its rows in id order (slots may differ after a restore)."""
    out = {}
    for name, table in trainer.model.tables.items():
        state = table.state_dict()
        order = np.argsort(state["ids"])
        out[name] = {k: (v[order] if len(v) == len(order) and k not in ("generator", "counters") else v)
                     for k, v in state.items()}
    return out


def test_a_chain_of_increments_restores_the_trainer_bit_for_bit(tmp_path: Path) -> None:
    batches = _batches(13)
    specs = default_specs(Simulator.fields, dim=4)
    for model in ("fm", "deepfm"):
        trainer = OnlineTrainer(build_model(model, specs, ModelConfig(dim=4, admit_after=2)))
        store = CheckpointStore(tmp_path / model, full_every=3)
        for step, batch in enumerate(batches[:10], start=1):
            trainer.learn(batch)
            store.save(Checkpoint(step, {"row": step}, trainer))
        # whole at 1, 4, 7, 10: the chains of 7 and 10 are kept; the newest (10) is whole
        assert store.steps() == [7, 8, 9, 10] and [base_of(store.path(s)) for s in (7, 8, 9, 10)] == [None, 7, 8, None]
        trainer.learn(batches[10])
        store.save(Checkpoint(11, {"row": 11}, trainer))   # an increment on 10: restored through the chain
        assert base_of(store.path(11)) == 10
        restored = store.latest().trainer
        want, got = _tables(trainer), _tables(restored)
        for name in want:
            assert want[name].keys() == got[name].keys()
            assert all(np.array_equal(want[name][k], got[name][k]) for k in want[name]), (model, name)
        for batch in batches[11:]:
            assert torch.equal(trainer.learn(batch)["predictions"], restored.learn(batch)["predictions"])


def test_evicted_ids_are_deleted_by_the_increment(tmp_path: Path) -> None:
    batches = _batches(4)
    specs = default_specs(Simulator.fields, dim=4)
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=4, ttl_seconds=0.5)))
    store = CheckpointStore(tmp_path, full_every=5)
    trainer.learn(batches[0])
    store.save(Checkpoint(1, {"row": 1}, trainer))
    trainer.learn(batches[3])
    evicted = trainer.model.table.evict(now=float(batches[3].ts.max()))
    store.save(Checkpoint(2, {"row": 2}, trainer))
    assert evicted > 0 and base_of(store.path(2)) == 1
    restored = store.latest().trainer
    assert restored.model.table.live == trainer.model.table.live
    ids = [np.sort(t.model.table.state_dict()["ids"]) for t in (restored, trainer)]
    assert np.array_equal(*ids)
