"""The publisher: a full snapshot first, deltas at the sync interval, nothing for an idle interval;
failed writes retried with backoff and nothing lost."""

from __future__ import annotations

import errno
from pathlib import Path

import torch

from freshrec._durable import WRITE_FAULTS
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics.prometheus import ServingMetrics
from freshrec.models import build_model
from freshrec.serve import ModelService
from freshrec.snapshot import ModelRegistry, files
from freshrec.train import OnlineTrainer


def test_publishes_on_the_clock_and_carries_entry_times(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(batch_size=200, total_events=1000))
    specs = default_specs(sim.fields, dim=4)
    trainer, pipeline = OnlineTrainer(build_model("lr", specs)), FeaturePipeline(specs)
    now = [0.0]
    registry = ModelRegistry(tmp_path)
    publisher = Publisher(registry, trainer.model, sim.fields, SyncConfig(sync_interval=1.0, full_interval=10.0),
                          clock=lambda: now[0])
    kinds = []
    for chunk, at in zip(sim, (0.0, 0.5, 1.2, 1.4, 11.0)):
        now[0] = at
        trainer.learn(pipeline.build(chunk))
        publisher.observe(chunk)
        kinds.append(publisher.maybe_publish())
    now[0] = 30.0
    assert publisher.maybe_publish() == "full"      # due, even with nothing new
    now[0] = 32.0
    assert publisher.maybe_publish() is None        # no new events: no delta
    assert kinds == ["full", None, "delta", None, "full"]
    assert registry.full_versions() == [1, 3, 4] and registry.delta_versions() == [2, 3, 4]
    delta = registry.load_delta(2)
    assert delta.meta["events"] == 400 and delta.meta["entered_min"] <= delta.meta["entered_max"]
    assert delta.interactions.num_rows == 400
    assert set(delta.interactions.column_names) >= {"user_id", "item_id", "item_category", "user_segment"}
    assert "hour" not in delta.interactions.column_names      # context is not kept per entity
    assert registry.load_full(4).interactions.num_rows == 1000


def _setup(tmp_path: Path, now: list[float]):
    sim = Simulator(SimulatorConfig(batch_size=200, total_events=1000, seed=3))
    specs = default_specs(sim.fields, dim=4)
    trainer, pipeline = OnlineTrainer(build_model("fm", specs)), FeaturePipeline(specs)
    config = SyncConfig(sync_interval=1.0, full_interval=1e9, retry_initial=2.0, retry_max=8.0)
    publisher = Publisher(ModelRegistry(tmp_path / "registry"), trainer.model, sim.fields, config,
                          clock=lambda: now[0])

    def learn(chunk, at: float) -> str | None:
        now[0] = at
        trainer.learn(pipeline.build(chunk))
        publisher.observe(chunk)
        return publisher.maybe_publish()
    return list(sim), trainer, pipeline, publisher, learn


def _served_scores(registry: ModelRegistry, batch) -> torch.Tensor:
    """What a server following the registry from scratch predicts for `batch`."""
    service = ModelService(registry)
    service.sync()
    with service.switcher.lease() as replica:
        return replica.model(batch)


def _failures() -> float:
    return WRITE_FAULTS.get_sample_value("freshrec_write_failures_total", {"target": "registry"}) or 0.0


def test_an_unwritable_registry_is_survived_and_no_row_is_lost(tmp_path: Path) -> None:
    now = [0.0]
    chunks, trainer, pipeline, publisher, learn = _setup(tmp_path, now)
    root = publisher.registry.root
    assert learn(chunks[0], 0.0) == "full"
    root.rename(tmp_path / "moved")
    root.write_text("not a directory")            # every write under it fails (even as root)
    before = _failures()
    assert learn(chunks[1], 1.0) is None and publisher.failed == {"full": 0, "delta": 1}
    assert "NotADirectoryError" in publisher.last_error or "FileExistsError" in publisher.last_error
    assert learn(chunks[2], 2.9) is None and publisher.failed["delta"] == 1     # waiting: 2 s backoff
    assert learn(chunks[3], 3.0) is None and publisher.failed["delta"] == 2     # tried, failed: 4 s now
    assert _failures() == before + 2
    assert b'freshrec_write_failures_total{target="registry"}' in ServingMetrics().exposition()   # /metrics
    root.unlink()
    (tmp_path / "moved").rename(root)             # writable again
    assert learn(chunks[4], 6.9) is None          # still waiting
    assert publisher.maybe_publish() is None
    now[0] = 7.0
    assert publisher.maybe_publish() == "delta"
    delta = publisher.registry.load_delta(2)
    assert (delta.since, delta.meta["events"], delta.interactions.num_rows) == (1, 800, 800)
    batch = pipeline.build(chunks[4])
    assert torch.equal(_served_scores(publisher.registry, batch), trainer.model(batch))


def test_a_write_that_failed_after_landing_is_healed_by_a_full_snapshot(tmp_path: Path, monkeypatch) -> None:
    now = [0.0]
    chunks, trainer, pipeline, publisher, learn = _setup(tmp_path, now)
    assert learn(chunks[0], 0.0) == "full"
    real = files.fsync_dir

    def full_disk(path: Path) -> None:
        if path == publisher.registry.root / "delta":         # the rename is done, its fsync fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)
    monkeypatch.setattr(files, "fsync_dir", full_disk)
    assert learn(chunks[1], 1.0) is None
    assert "No space left" in publisher.last_error and publisher.registry.delta_versions() == [2]
    monkeypatch.setattr(files, "fsync_dir", real)
    assert learn(chunks[2], 3.0) == "full"        # the registry holds a version the publisher never counted
    assert publisher.registry.latest_full() == publisher.version == 3
    batch = pipeline.build(chunks[2])
    assert torch.equal(_served_scores(publisher.registry, batch), trainer.model(batch))
