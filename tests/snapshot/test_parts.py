"""Versions published in parts (one per rank of a worker group, each with its shard of every table):
listed once complete, assembled into the whole model, served; incomplete or mismatched parts never are."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from freshrec.cluster import owners
from freshrec.cluster.reshard import merged_table_state, replace_tables
from freshrec.embedding import TableDelta
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.serve import ModelService
from freshrec.snapshot import CorruptVersion, Delta, ModelRegistry, Snapshot, table_versions
from freshrec.train import OnlineTrainer

WORLD = 2


@pytest.fixture
def whole():
    """An FM that learned 3 chunks, the batches, and a table of interactions per rank."""
    sim = Simulator(SimulatorConfig(batch_size=256, total_events=1536, seed=4))
    specs = default_specs(sim.fields, dim=4)
    pipeline = FeaturePipeline(specs)
    chunks = list(sim)
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=4, seed=2)))
    for chunk in chunks[:3]:
        trainer.learn(pipeline.build(chunk))
    return trainer, [pipeline.build(chunk) for chunk in chunks], [chunks[r].table.slice(0, 10) for r in range(WORLD)]


def _shard(model, rank: int):
    """A copy of `model` holding only the rows `rank` owns (what that rank of a group holds)."""
    part = _copy(model)
    states = {name: merged_table_state([table.state_dict()], rank, WORLD) for name, table in model.tables.items()}
    replace_tables(part.embeddings.tables, states)
    return part


def _copy(model):
    clone = build_model("fm", model.specs, model.config)
    clone.load_state_dict(model.state_dict())
    for name, table in model.tables.items():
        clone.tables[name].load_state_dict(table.state_dict())
    return clone


def _split(delta: Delta, rank: int) -> Delta:
    """Rank `rank`'s part of a whole model's delta: the rows and deletions of the ids it owns."""
    tables = {}
    for name, d in delta.tables.items():
        mine, gone = owners(d.ids, WORLD) == rank, owners(d.deleted, WORLD) == rank
        state = {k: v[mine] for k, v in d.state.items()}
        tables[name] = TableDelta(d.since, d.version, d.ids[mine], d.rows[mine], state, d.counts[mine],
                                  d.last_seen[mine], d.deleted[gone])
    return dataclasses.replace(delta, tables=tables, meta={**delta.meta, "events": 100 + rank})


def _scores(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)


def _publish_full(root: Path, model, version: int, interactions, ranks=range(WORLD), keep: int = 3) -> None:
    for rank in ranks:
        ModelRegistry(root, keep, part=(rank, WORLD)).publish(
            Snapshot(_shard(model, rank), version, {"events": 10 * (rank + 1), "fields": []}, interactions[rank]))


def test_a_full_version_is_listed_once_every_part_is_there_and_assembles_the_whole_model(tmp_path, whole) -> None:
    trainer, batches, interactions = whole
    registry = ModelRegistry(tmp_path)
    _publish_full(tmp_path, trainer.model, 1, interactions, ranks=[0])
    assert registry.full_versions() == [] and registry.latest() is None and registry.latest(partial=True) == 1
    _publish_full(tmp_path, trainer.model, 1, interactions, ranks=[1])
    assert registry.full_versions() == [1] and registry.latest() == 1
    snapshot = registry.load_full(1)
    assert snapshot.model.live_ids == trainer.model.live_ids > 0
    assert torch.equal(_scores(snapshot.model, batches[3]), _scores(trainer.model, batches[3]))
    assert snapshot.meta["events"] == 30 and len(snapshot.interactions) == 20
    meta, table = registry.interactions("full", 1)
    assert meta["events"] == 30 and table.equals(pa.concat_tables(interactions))


def test_deltas_in_parts_bring_a_server_to_the_trainers_model(tmp_path, whole) -> None:
    trainer, batches, interactions = whole
    _publish_full(tmp_path, trainer.model, 1, interactions)
    service = ModelService(ModelRegistry(tmp_path))
    assert service.sync() == 1
    since = table_versions(trainer.model)
    trainer.learn(batches[3])
    delta = Delta.capture(trainer.model, 1, 2, since, optimizer_state=False)
    ModelRegistry(tmp_path, part=(1, WORLD)).publish(_split(delta, 1))
    assert service.sync() == 1 and ModelRegistry(tmp_path).delta_versions() == []   # part 0 is not there yet
    ModelRegistry(tmp_path, part=(0, WORLD)).publish(_split(delta, 0))
    assert service.sync() == 2
    with service.switcher.lease() as replica:
        assert torch.equal(_scores(replica.model, batches[4]), _scores(trainer.model, batches[4]))
        assert replica.model.live_ids == trainer.model.live_ids
    assert ModelRegistry(tmp_path).load_delta(2).meta["events"] == 201


def test_parts_of_different_spans_are_refused_and_the_server_keeps_its_version(tmp_path, whole) -> None:
    trainer, batches, interactions = whole
    _publish_full(tmp_path, trainer.model, 1, interactions)
    since = table_versions(trainer.model)
    trainer.learn(batches[3])
    delta = Delta.capture(trainer.model, 1, 2, since, optimizer_state=False)
    ModelRegistry(tmp_path, part=(0, WORLD)).publish(_split(delta, 0))
    ModelRegistry(tmp_path, part=(1, WORLD)).publish(dataclasses.replace(_split(delta, 1), since=0))
    with pytest.raises(ValueError, match=r"do not span the same versions and tables \(1->2, 0->2\)"):
        ModelRegistry(tmp_path).load_delta(2)
    service = ModelService(ModelRegistry(tmp_path))
    assert service.sync() == 1
    assert service.metrics.sync_errors.labels("ValueError")._value.get() == 1


def test_a_torn_part_is_refused(tmp_path, whole) -> None:
    trainer, _, interactions = whole
    _publish_full(tmp_path, trainer.model, 1, interactions)
    torn = next((tmp_path / "parts" / "full" / "v000000000001" / "part-1-of-2").glob("table.*"))
    torn.write_bytes(torn.read_bytes()[:-8])
    with pytest.raises(CorruptVersion, match="part-1-of-2"):
        ModelRegistry(tmp_path).load_full(1)


def test_pruning_removes_old_versions_and_parts_no_rank_will_finish(tmp_path, whole) -> None:
    trainer, _, interactions = whole
    _publish_full(tmp_path, trainer.model, 1, interactions, keep=1)
    _publish_full(tmp_path, trainer.model, 2, interactions, ranks=[0], keep=1)   # its group died before rank 1 wrote
    registry = ModelRegistry(tmp_path, keep=1)
    assert registry.full_versions() == [1] and registry.latest(partial=True) == 2
    _publish_full(tmp_path, trainer.model, 3, interactions, keep=1)
    assert registry.full_versions() == [3] and registry.latest(partial=True) == 3
    assert sorted(p.name for p in (tmp_path / "parts" / "full").iterdir()) == ["v000000000003"]


def test_a_part_handle_names_its_rank_within_the_world(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"0 <= rank < world, not \(2, 2\)"):
        ModelRegistry(tmp_path, part=(2, 2))

