"""The engine's two-tower stage: it learns every chunk the ranking model learns, its state travels in the
checkpoints (a stop and restore mid-stream ends exactly like an uninterrupted run), and it publishes to its own
registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from conftest import straight_and_resumed

from freshrec.config import parse_config
from freshrec.engine.build import retrieval_stage
from freshrec.engine.dataflow import RETRIEVAL_REGISTRY, DataFlowEngine, EngineConfig
from freshrec.events.simulator import FIELDS, Simulator, SimulatorConfig
from freshrec.events.source import TableReplay
from freshrec.features import default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry

SPECS = default_specs(FIELDS, dim=4)
SETTINGS = parse_config({"retrieval": {"enabled": True, "dim": 8, "out_dim": 8, "history": 5, "batch_size": 100,
                                       "negatives": 32}})


def _table() -> pa.Table:
    sim = Simulator(SimulatorConfig(total_events=4000, batch_size=4000, n_users=40, n_items=60, seed=5))
    return pa.concat_tables(c.table for c in sim)


def _replay() -> TableReplay:
    table = _table()
    return TableReplay(table, np.arange(table.num_rows), "sim", FIELDS, batch_size=500)


def _engine(root: Path, source: TableReplay | None = None, publish: bool = False) -> DataFlowEngine:
    source = source or _replay()
    engine = DataFlowEngine(source, SPECS, lambda: build_model("fm", SPECS, ModelConfig(dim=4)), root,
                            EngineConfig(checkpoint_events=1000, publish=publish))
    engine.retrieval = retrieval_stage(SETTINGS, source.fields)
    return engine


def test_the_two_tower_learns_every_event_and_is_published(tmp_path: Path) -> None:
    engine = _engine(tmp_path, publish=True)
    figures = engine.run()
    assert figures["retrieval"]["rows"] == figures["learned"] == 4000 and figures["retrieval"]["failed"] == 0
    assert figures["retrieval"]["published"]["full"] >= 1
    service = ModelService(ModelRegistry(tmp_path / RETRIEVAL_REGISTRY))   # what a server follows
    service.sync()
    probe = engine.retrieval.learner.batch(_table().slice(0, 300))
    with torch.no_grad(), service.switcher.lease() as replica:   # the last version: the model learned to the end
        assert torch.equal(replica.model(probe), engine.retrieval.learner.model.eval()(probe))


def test_stop_and_restore_mid_stream_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, first, second = straight_and_resumed(_engine, _replay, tmp_path)
    assert second.events == 1500 and second.retrieval.learner.trainer.steps == first.retrieval.learner.trainer.steps > 0
    second.run()
    a, b = second.retrieval.learner, straight.retrieval.learner
    assert a.trainer.steps == b.trainer.steps and np.array_equal(a.trainer.catalogue.keys, b.trainer.catalogue.keys)
    probe = a.batch(_table().slice(0, 300))
    with torch.no_grad():
        assert torch.equal(a.model.eval()(probe), b.model.eval()(probe))
    assert dict(a.recent) == dict(b.recent) and dict(a.consumed) == dict(b.consumed)


def test_labelled_positives_learn_only_the_clicks(tmp_path: Path) -> None:
    settings = parse_config({"retrieval": {"enabled": True, "positives": "labelled", "batch_size": 100}})
    source = _replay()
    engine = DataFlowEngine(source, SPECS, lambda: build_model("lr", SPECS), tmp_path, EngineConfig(publish=False))
    engine.retrieval = retrieval_stage(settings, source.fields)
    figures = engine.run()
    assert figures["retrieval"]["rows"] == int(_table().column("label").to_numpy().sum()) < 4000
