"""The `trained` fixture: a trained model in a registry, published the way the trainer does it
(imported by the serve tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer


@dataclass
class Trained:
    registry: ModelRegistry
    trainer: OnlineTrainer
    publisher: Publisher
    pipeline: FeaturePipeline
    chunks: list

    def learn(self, chunk) -> str | None:
        self.trainer.learn(self.pipeline.build(chunk))
        self.publisher.observe(chunk)
        return self.publisher.maybe_publish()


@pytest.fixture
def trained(tmp_path: Path) -> Trained:
    sim = Simulator(SimulatorConfig(batch_size=500, total_events=4000, seed=5))
    specs = default_specs(sim.fields, dim=4)
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=4)))
    registry = ModelRegistry(tmp_path / "registry")
    publisher = Publisher(registry, trainer.model, sim.fields, SyncConfig(sync_interval=0.0, full_interval=1e9))
    return Trained(registry, trainer, publisher, FeaturePipeline(specs), list(sim))
