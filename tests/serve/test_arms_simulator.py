"""A live A/B test on the simulator's known click model: the server holds an online arm (every version
the trainer publishes) and a frozen arm (the first version); each user is shown the top 5 of 30
random candidates as their arm's /predict ranks them, clicks with the simulator's click probability,
and the clicks are posted back to /events, which the trainer learns. The online arm must win: its
CTR's 95% interval above the frozen arm's, in the server's /arms and in `freshrec evaluate arms`
over the arms log."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import wait_until
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from freshrec.cli import app as cli
from freshrec.config import ExperimentSection
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.engine.train_serve import learn_live
from freshrec.events.event import FieldKind
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.models import ModelConfig, build_model
from freshrec.serve import create_app
from freshrec.serve.app import ServeConfig
from freshrec.serve.arms import ArmsLog
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer

N_USERS, N_ITEMS, WARM_UP = 100, 150, 400
ROUNDS, USERS_PER_ROUND, CANDIDATES, K = 50, 30, 30, 5


@pytest.fixture
def experiment_server(tmp_path):
    """A trainer thread learning the live queue (after WARM_UP simulated events) and an app with the
    arms online and frozen, half the users each; yields (client, simulator, online service, log dir)."""
    sim = Simulator(SimulatorConfig(n_users=N_USERS, n_items=N_ITEMS, new_user_rate=0, new_item_rate=0, drift=0.0,
                                    batch_size=200, total_events=WARM_UP, seed=3, affinity=2.5))
    specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)]
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=8)))
    registry = ModelRegistry(tmp_path / "registry")
    publisher = Publisher(registry, trainer.model, sim.fields, SyncConfig(sync_interval=0.0))
    live, stop = LiveQueue(sim.fields), threading.Event()
    thread = threading.Thread(target=learn_live, args=(sim, live, FeaturePipeline(specs), trainer, publisher, stop),
                              kwargs={"batch_size": 200}, daemon=True)
    thread.start()
    log = tmp_path / "arms"
    arms = ExperimentSection(arms=[{"name": "frozen", "traffic": 0.5, "follow": "frozen", "version": 1},
                                   {"name": "online", "traffic": 0.5}], salt="test", log=log)
    service = ModelService(registry, sink=live)
    wait_until(lambda: 1 in registry.full_versions(), "the first full snapshot")
    try:
        with TestClient(create_app(service, ServeConfig(experiment=arms, poll_interval=0.01))) as client:
            wait_until(lambda: client.get("/healthz").json()["ready"], "every arm has a model")
            yield client, sim, service, log
    finally:
        stop.set()
        live.close()
        thread.join(timeout=60)


def test_the_online_arm_beats_the_frozen_arm_on_the_simulators_click_model(experiment_server):
    client, sim, online, log = experiment_server
    rng = np.random.default_rng(0)
    posted, labelled = WARM_UP, 0
    for _ in range(ROUNDS):
        events = []
        for user in rng.choice(N_USERS, USERS_PER_ROUND, replace=False).tolist():
            candidates = rng.choice(N_ITEMS, CANDIDATES, replace=False).tolist()   # retrieval, outside the server
            answer = client.post("/predict", json={"user": user, "candidates": candidates}).json()
            items = np.array(answer["items"], dtype=np.int64)[np.argsort(answer["scores"])[::-1][:K]]
            clicked = rng.random(len(items)) < sim.click_probability(np.full(len(items), user), items)
            events += [{"user": user, "item": int(item), "label": int(label), "arm": answer["arm"]}
                       for item, label in zip(items, clicked)]
        assert client.post("/events", json={"events": events}).status_code == 202
        posted, labelled = posted + len(events), labelled + len(events)
        wait_until(lambda due=posted: online.events_learned >= due, "the online arm serves a version that learned them")

    figures = client.get("/arms").json()["arms"]
    frozen, live = figures["frozen"], figures["online"]
    assert frozen["version"] == 1 and live["version"] > 1
    assert frozen["labelled"] + live["labelled"] == labelled
    assert live["ctr_low"] > frozen["ctr_high"], figures
    assert live["lift"] > 0 and live["p_value"] < 0.01

    wait_until(lambda: sum(t.labelled for t in ArmsLog.read(log).values()) == labelled if list(log.glob("*.json"))
               else False, "the arms log has every labelled event")
    result = CliRunner().invoke(cli, ["evaluate", "arms", str(log), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert report["winner"] == "online"
    assert report["arms"]["online"]["ctr"] == pytest.approx(live["ctr"])
    assert report["arms"]["online"]["cost_per_million_requests"] > 0
