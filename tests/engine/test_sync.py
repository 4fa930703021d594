"""The publisher: a full snapshot first, deltas at the sync interval, nothing for an idle interval."""

from __future__ import annotations

from pathlib import Path

from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import build_model
from freshrec.snapshot import ModelRegistry
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
