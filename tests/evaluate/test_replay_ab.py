"""`replay_ab` over chunks cut into micro-batches: an arm's results depend on the micro-batches,
not on how the stream is chunked (the frozen arms retrain before the same micro-batches, the
online arm learns the same micro-batches)."""

from __future__ import annotations

import numpy as np

from freshrec.evaluate import ABConfig, replay_ab
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig
from freshrec.train import Unit
from freshrec.train.offline import OfflineConfig


def test_the_arms_do_not_depend_on_how_the_stream_is_chunked() -> None:
    sim = Simulator(SimulatorConfig(total_events=3000, batch_size=1000, events_per_second=100.0))  # 30 s
    specs = default_specs(sim.fields, dim=4)
    pipeline = FeaturePipeline(specs)
    wholes = [pipeline.build(chunk) for chunk in sim]
    chunked = [Unit.of(whole, 64) for whole in wholes]
    one_per_micro_batch = [Unit(batch, [len(batch)]) for whole in wholes for batch in whole.split(64)]
    config = ABConfig(arms=("daily", "online", "hybrid"), model_config=ModelConfig(dim=4), day=7.0,
                      offline_interval=5.0, offline_window=None, offline=OfflineConfig(epochs=1))
    a, b = replay_ab(chunked, specs, config), replay_ab(one_per_micro_batch, specs, config)
    assert a.arms["daily"].retrains == b.arms["daily"].retrains >= 4        # 30 s of 7 s days
    assert a.arms["hybrid"].retrains == b.arms["hybrid"].retrains >= 4
    np.testing.assert_allclose(a.arms["daily"].scores, b.arms["daily"].scores, atol=1e-6)
    # the online arms learn the same micro-batches; new ids get their random first rows in the order
    # a chunk first shows them, so the scores differ by that draw only
    online, other = a.figures()["online"], b.figures()["online"]
    assert online["rows"] == other["rows"] == 3000 and abs(online["auc"] - other["auc"]) < 0.01
    assert online["auc"] > a.figures()["daily"]["auc"] > 0.5
