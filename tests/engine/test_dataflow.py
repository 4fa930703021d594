"""The engine with the joiner: impressions and delayed clicks become examples that are logged and
learned; a stop and restore mid-stream ends exactly like an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import straight_and_resumed

from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
from freshrec.events.event import Field, FieldKind
from freshrec.events.simulator import FIELDS, Simulator, SimulatorConfig
from freshrec.events.source import TableReplay
from freshrec.features import FeaturePipeline, default_specs
from freshrec.join import JoinConfig, Joiner
from freshrec.models import ModelConfig, build_model

SPECS = default_specs(FIELDS, dim=4)


def _impressions_and_clicks(events: int = 6000) -> TableReplay:
    """Simulated impressions; each clicked one gets a click 1-40 s later (some past the 30 s window)."""
    sim = Simulator(SimulatorConfig(total_events=events, batch_size=events, seed=3))
    table = pa.concat_tables(c.table for c in sim)
    n = table.num_rows
    impressions = table.drop_columns(["label"]).append_column("kind", pa.array(["impression"] * n)).append_column(
        "impression_id", pa.array([f"imp{i}" for i in range(n)]))
    clicked = np.flatnonzero(table.column("label").to_numpy() > 0.5)
    delay = np.random.default_rng(0).uniform(1.0, 40.0, len(clicked))
    clicks = impressions.take(clicked)
    clicks = clicks.set_column(clicks.schema.get_field_index("ts"), "ts",
                               pa.array(clicks.column("ts").to_numpy() + delay))
    clicks = clicks.set_column(clicks.schema.get_field_index("kind"), "kind", pa.array(["click"] * len(clicked)))
    stream = pa.concat_tables([impressions, clicks])
    fields = FIELDS + (Field("impression_id", FieldKind.CATEGORICAL),)
    return TableReplay(stream, np.arange(stream.num_rows), "sim", fields, batch_size=1000)


def _engine(root: Path, source: TableReplay | None = None) -> DataFlowEngine:
    joiner = Joiner(JoinConfig(window=30.0, allowed_lateness=0.0, key=("impression_id",)))
    return DataFlowEngine(source or _impressions_and_clicks(), SPECS,
                          lambda: build_model("fm", SPECS, ModelConfig(dim=4)), root,
                          EngineConfig(checkpoint_events=2000, publish=False), joiner)


def test_joined_examples_are_logged_and_learned(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    figures = engine.run()
    stats = engine.joiner.stats
    assert figures["logged"] == figures["learned"] == stats.positives + stats.negatives == 6000
    assert 0 < stats.positives < 6000 and figures["auc"] > 0.5
    labels = np.concatenate([c.table.column("label").to_numpy() for c in engine.log.read()])
    assert labels.sum() == stats.positives


def test_stop_and_restore_mid_stream_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, first, second = straight_and_resumed(_engine, _impressions_and_clicks, tmp_path)
    assert second.events == first.events == 3000 < straight.events   # the stop cut falls after the third chunk
    figures = second.run()
    assert figures["learned"] == 6000 and second.joiner.stats == straight.joiner.stats
    probe = FeaturePipeline(SPECS).build(next(iter(Simulator(SimulatorConfig(total_events=500, seed=9)))))
    with torch.no_grad():
        assert torch.equal(second.trainer.model.eval()(probe), straight.trainer.model.eval()(probe))
    positions = [int(p) for c in second.log.read() for p in c.positions]
    assert sorted(positions) == sorted(int(p) for c in straight.log.read() for p in c.positions)
    assert len(positions) == len(set(positions)) == 6000


def test_a_chunk_without_the_join_key_is_refused(tmp_path: Path) -> None:
    engine = DataFlowEngine(Simulator(SimulatorConfig(total_events=100)), SPECS, lambda: build_model("lr", SPECS),
                            tmp_path, EngineConfig(publish=False), Joiner(JoinConfig(key=("impression_id",))))
    with pytest.raises(ValueError, match="impression_id"):
        engine.run()


def test_the_retrain_hook_fires_by_volume_and_sees_the_log(tmp_path: Path) -> None:
    seen = []
    engine = DataFlowEngine(Simulator(SimulatorConfig(total_events=5000, batch_size=500)), SPECS,
                            lambda: build_model("lr", SPECS), tmp_path,
                            EngineConfig(publish=False, retrain_events=2000))
    engine.retrain = lambda e: seen.append((e.events, e.log.rows))
    figures = engine.run()
    # the log holds every event learned so far (and the chunks the reader has read ahead)
    assert [events for events, _ in seen] == [2000, 4000] and figures["retrains"] == 2
    assert all(rows >= events for events, rows in seen)


def test_the_retrain_hook_fires_by_event_time(tmp_path: Path) -> None:
    seen = []
    engine = DataFlowEngine(Simulator(SimulatorConfig(total_events=5000, batch_size=500)), SPECS,
                            lambda: build_model("lr", SPECS), tmp_path,
                            EngineConfig(publish=False, retrain_seconds=1.0))
    engine.retrain = lambda e: seen.append(e.events)
    engine.run()
    assert len(seen) >= 2 and seen == sorted(seen)   # the simulator makes ~1,000 events per second


def test_run_with_a_join_config_learns_joined_examples_without_key_features(tmp_path: Path) -> None:
    from freshrec.config import parse_config
    from freshrec.engine.run import run

    config = parse_config({"model": {"dim": 4}, "training": {"checkpoint_events": 3000, "offline_interval": None},
                           "join": {"window": "30s", "allowed_lateness": 0, "key": ["impression_id"]}})
    figures = run(_impressions_and_clicks(), config, tmp_path, publish=False)
    assert figures["learned"] == 6000 and figures["events"] > 6000 and not figures["stopped_by_signal"]


def test_hedge_weights_travel_with_the_versions_and_the_server_blends(tmp_path: Path) -> None:
    from freshrec.engine.hybrid import OfflineSchedule
    from freshrec.models.base import probabilities
    from freshrec.serve import ModelService
    from freshrec.snapshot import ModelRegistry
    from freshrec.train.offline import OfflineConfig

    sim = Simulator(SimulatorConfig(total_events=8000, batch_size=500, seed=4))
    engine = DataFlowEngine(sim, SPECS, lambda: build_model("fm", SPECS, ModelConfig(dim=4)), tmp_path,
                            EngineConfig(retrain_events=2000))
    schedule = OfflineSchedule(engine, OfflineConfig(epochs=1), fusion="hedge", window=500)
    engine.retrain, engine.on_scored, engine.publish_meta = schedule, schedule.observe, schedule.meta
    engine.run(on_chunk=schedule.poll)
    schedule.close(engine)               # waits for the retraining in progress: an offline model exists
    for batch in FeaturePipeline(SPECS).build(next(iter(Simulator(SimulatorConfig(total_events=1000, seed=5))))
                                             ).split(250):
        schedule.observe(batch, probabilities(engine.trainer.model, batch))
    engine.publisher.publish_delta()     # weights for the newest offline model travel with this version
    service = ModelService(engine.registry, offline=ModelRegistry(tmp_path / "offline-registry"))
    service.sync()
    replica, offline = service.switcher.current, service.offline_switcher.current
    assert replica.fusion is not None and 0.0 < replica.fusion["w_online"] < 1.0
    assert f"freshrec_fusion_online_weight {replica.fusion['w_online']}".encode() in service.metrics.exposition()
    own = {"item_category": 2, "price": 5.0}
    items = [(i, own) for i in range(20)]
    _, blended = service.predict(7, {"hour": 3, "user_segment": 1}, items)
    rows = replica.rows(7, list(range(20)), {"hour": "3", "user_segment": "1"}.get,
                        lambda column: [{"item_category": "2", "price": 5.0}[column]] * 20, own.keys())
    weight = replica.fusion["w_online"]
    assert offline.version == replica.fusion["offline_version"]
    expected = weight * replica.score(rows) + (1 - weight) * offline.score(rows)
    np.testing.assert_allclose(blended, expected, rtol=1e-6)


@pytest.mark.parametrize("window", [None, 2.0])
def test_offline_retraining_reads_the_log_back_over_its_window(tmp_path: Path, window: float | None) -> None:
    from freshrec.engine.hybrid import OfflineSchedule
    from freshrec.log import EventLog
    from freshrec.snapshot import ModelRegistry
    from freshrec.train.offline import OfflineConfig

    sim = Simulator(SimulatorConfig(total_events=6000, batch_size=500, seed=6))   # 6 s of event time
    engine = DataFlowEngine(sim, SPECS, lambda: build_model("fm", SPECS, ModelConfig(dim=4)), tmp_path,
                            EngineConfig(publish=False))
    engine.run()
    schedule = OfflineSchedule(engine, OfflineConfig(epochs=1, window=window))
    schedule(engine)
    schedule.close(engine)
    log = EventLog(tmp_path / "log", sim.fields)
    start = None if window is None else log.newest - window
    expected = sum(len(chunk) for chunk in log.read(start))
    assert 0 < expected < 6000 if window else expected == 6000
    offline = ModelRegistry(tmp_path / "offline-registry")
    assert offline.load_full(offline.latest()).meta["rows"] == expected


def test_the_engine_keeps_the_log_within_its_retention(tmp_path: Path) -> None:
    from freshrec.log import EventLog

    sim = Simulator(SimulatorConfig(total_events=6000, batch_size=500, seed=6))   # 6 s of event time
    engine = DataFlowEngine(sim, SPECS, lambda: build_model("fm", SPECS, ModelConfig(dim=4)), tmp_path,
                            EngineConfig(publish=False, checkpoint_events=1000, log_roll_bytes=1, log_retention=2.0))
    figures = engine.run()
    log = EventLog(tmp_path / "log", sim.fields)
    ts = [t for chunk in log.read() for t in chunk.table.column("ts").to_pylist()]
    assert figures["events"] == 6000 and 0 < len(ts) < 6000 and engine.log.expired == 6000 - len(ts)
    assert min(ts) >= log.newest - 2.0 - 0.6   # at most a segment (a chunk: 0.5 s) beyond the retention
