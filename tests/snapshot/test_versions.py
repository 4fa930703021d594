"""Snapshots and deltas reproduce the trained model exactly; torn versions are refused."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
import torch

from freshrec.batch import Batch
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.snapshot import (
    CorruptVersion,
    Delta,
    ModelRegistry,
    ModelSwitcher,
    Snapshot,
    table_versions,
)
from freshrec.train import OnlineTrainer


def _stream(events: int = 2048, seed: int = 3):
    sim = Simulator(SimulatorConfig(batch_size=256, total_events=events, seed=seed))
    specs = default_specs(sim.fields, dim=4)
    pipeline = FeaturePipeline(specs)
    return specs, [pipeline.build(chunk) for chunk in sim]


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn"])
def test_snapshot_round_trip_gives_identical_predictions(tmp_path: Path, name: str) -> None:
    specs, batches = _stream()
    trainer = OnlineTrainer(build_model(name, specs, ModelConfig(dim=4, seed=1)))
    for batch in batches[:-1]:
        trainer.learn(batch)
    Snapshot(trainer.model, version=5, meta={"note": "x"}).save(tmp_path)
    loaded = Snapshot.load(tmp_path)
    assert loaded.version == 5 and loaded.meta["note"] == "x"
    assert type(loaded.model) is type(trainer.model) and loaded.model.config == trainer.model.config
    trainer.model.eval()
    assert torch.equal(loaded.model(batches[-1]), trainer.model(batches[-1]))
    assert loaded.model.live_ids == trainer.model.live_ids > 0


def test_a_chain_of_deltas_tracks_training_with_eviction(tmp_path: Path) -> None:
    """Deltas carry written rows and evicted ids; the replica equals the trained model bitwise."""
    specs, batches = _stream(4096)
    model = build_model("fm", specs, ModelConfig(dim=4, capacity=300))
    trainer = OnlineTrainer(model)
    trainer.learn(batches[0])
    Snapshot(model, 1).save(tmp_path / "v1")
    replica = Snapshot.load(tmp_path / "v1").model
    since = table_versions(model)
    evicted = deleted = 0
    for version, batch in enumerate(batches[1:], start=2):
        trainer.learn(batch)
        evicted += sum(t.evict(now=float(batch.ts.max())) for t in model.tables.values())
        delta = Delta.capture(model, version - 1, version, since)
        since = {name: d.version for name, d in delta.tables.items()}
        deleted += sum(len(d.deleted) for d in delta.tables.values())
        delta.save(tmp_path / f"d{version}")
        Delta.load(tmp_path / f"d{version}").apply(replica)
    assert deleted >= evicted > 0   # an eviction after the last update is carried by two deltas
    assert replica.live_ids == model.live_ids <= 300
    model.eval()
    for batch in batches:
        assert torch.equal(replica(batch), model(batch))


def test_registry_refuses_a_torn_snapshot_and_keeps_versions_in_order(tmp_path: Path) -> None:
    specs, _ = _stream(512)
    model = build_model("lr", specs)
    registry = ModelRegistry(tmp_path, keep=2)
    registry.publish(Snapshot(model, 1))
    path = registry.publish(Snapshot(model, 2))
    with pytest.raises(ValueError, match="not newer"):
        registry.publish(Snapshot(model, 2))
    table = next(path.glob("table.*"))
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])     # torn write
    with pytest.raises(CorruptVersion, match="bytes"):
        registry.load_full(2)
    (path / "MANIFEST.json").unlink()                                       # never finished
    with pytest.raises(CorruptVersion, match="no MANIFEST"):
        registry.load_full(2)
    (tmp_path / "full" / ".tmp-v000000000003-1").mkdir()                    # an interrupted publish
    assert registry.full_versions() == [1, 2]
    with pytest.raises(CorruptVersion):
        registry.promote(2)


def test_registry_keeps_the_last_k_full_snapshots_and_their_deltas(tmp_path: Path) -> None:
    specs, _ = _stream(256)
    model = build_model("lr", specs)
    registry = ModelRegistry(tmp_path, keep=2)
    since = table_versions(model)
    for version in range(1, 8):
        if version % 3 == 1:
            registry.publish(Snapshot(model, version))
        else:
            registry.publish(Delta.capture(model, version - 1, version, since))
    assert registry.full_versions() == [4, 7]
    assert registry.delta_versions() == [5, 6]
    assert registry.rollback() == 4 and registry.target() == 4
    registry.publish(Snapshot(model, 8))
    assert registry.full_versions() == [4, 7, 8]     # the pinned one is kept
    registry.unpin()
    assert registry.target() == 8


def test_switcher_in_flight_requests_finish_on_their_model_and_the_old_one_is_released() -> None:
    class Model:
        def __init__(self, version: int) -> None:
            self.version = version

    switcher: ModelSwitcher[Model] = ModelSwitcher(Model(0))
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def request() -> None:
        while not stop.is_set():
            with switcher.lease() as model:
                before = model.version
                threading.Event().wait(0.0005)
                seen.append((before, model.version))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    first = weakref.ref(switcher.current)
    for version in range(1, 30):
        old = switcher.swap(Model(version))
        assert switcher.drained(old, timeout=5.0)
        del old
        threading.Event().wait(0.002)
    stop.set()
    for thread in threads:
        thread.join()
    gc.collect()
    assert first() is None                   # released once its requests finished
    assert all(a == b for a, b in seen) and len({a for a, _ in seen}) > 5
    assert switcher.swaps == 29


def test_table_config_mismatch_is_refused(tmp_path: Path) -> None:
    specs, _ = _stream(256)
    Snapshot(build_model("lr", specs), 1).save(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"init_std": 0.01', '"init_std": 0.5', 1)
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ValueError, match="differs"):
        Snapshot.load(tmp_path)


def test_an_ordinal_models_offsets_and_levels_round_trip(tmp_path: Path) -> None:
    specs, batches = _stream()
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=4, seed=1, ordinal_levels=(1.0, 3.0))))
    for batch in batches:  # a graded target from the label: 2 for clicks, 0 otherwise
        trainer.learn(Batch(batch.sparse, batch.dense, batch.labels, batch.ts, batch.dense_keys, batch.labels * 2))
    Snapshot(trainer.model, version=1).save(tmp_path)
    loaded = Snapshot.load(tmp_path).model
    assert loaded.config.ordinal_levels == (1.0, 3.0) and loaded.config == trainer.model.config
    assert torch.equal(loaded.ordinal_offsets, trainer.model.ordinal_offsets)
    low, high = trainer.model.ordinal_offsets.tolist()
    assert high > low and high > 0.1  # nobody reaches level 3
