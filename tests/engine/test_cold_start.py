"""Cold-start metrics: an item's earlier events count across chunks and within a chunk in row order; the engine
reports them for every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.engine.cold_start import ColdStartMetrics
from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import default_specs
from freshrec.models import build_model


def _batch(items: list[int], labels: list[float]) -> Batch:
    n = len(items)
    return Batch(SparseFeatures(["item_id"], torch.tensor(items), torch.ones(n, dtype=torch.int32)),
                 dense=torch.zeros(n, 0), labels=torch.tensor(labels), ts=torch.zeros(n, dtype=torch.float64))


def test_earlier_events_count_across_chunks_and_in_row_order() -> None:
    cold = ColdStartMetrics(first=3)
    cold.update(_batch([5, 6, 5, 5], [1, 0, 0, 1]), np.array([0.9, 0.1, 0.2, 0.6], np.float32))   # all cold
    cold.update(_batch([5, 6, 6, 6], [0, 1, 0, 1]), np.array([0.3, 0.8, np.nan, 0.5], np.float32))
    report = cold.report()   # 5's fourth event and 6's fourth are warm; 6's third was not scored (NaN)
    assert report["rows"] == 5 and report["positives"] == 3 and report["first"] == 3


def test_a_run_reports_its_cold_items(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(total_events=3000, batch_size=500, n_items=200))
    specs = default_specs(sim.fields, dim=4)
    figures = DataFlowEngine(sim, specs, lambda: build_model("fm", specs), tmp_path, EngineConfig(publish=False)).run()
    cold = figures["cold_items"]
    assert 200 <= cold["rows"] < 3000 and 0 < cold["auc"] < 1
