"""Live A/B arms: bucketing, the arms each follow their own way, attribution of events, the figures
and their log, and the bad inputs (config, events naming an unknown arm, a log that is not one)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from freshrec.cli import app as cli
from freshrec.config import ConfigError, ExperimentSection, parse_config
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ModelService, ServeConfig, create_app
from freshrec.serve.arms import ArmsLog, ArmTally, Splitter, arm_figures, wilson

ARMS = {"arms": [{"name": "control", "traffic": 0.8, "follow": "frozen"},
                 {"name": "treatment", "traffic": 0.2}], "salt": "s1"}


def test_users_are_split_by_the_traffic_shares_and_stay_in_their_arm() -> None:
    splitter = Splitter(("a", "b", "c"), (0.5, 0.3, 0.2), "salt")
    arms = [splitter.arm_of(user) for user in range(20_000)]
    shares = {arm: arms.count(arm) / len(arms) for arm in "abc"}
    assert shares == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2}, abs=0.015)
    assert [splitter.arm_of(user) for user in range(100)] == arms[:100]          # deterministic
    assert [splitter.arm_of(str(user)) for user in range(100)] == arms[:100]     # 7 and "7": one user
    reshuffled = Splitter(("a", "b", "c"), (0.5, 0.3, 0.2), "another salt")
    assert [reshuffled.arm_of(user) for user in range(100)] != arms[:100]


@pytest.mark.parametrize(("experiment", "message"), [
    ({"arms": [{"name": "a", "traffic": 0.6}, {"name": "b", "traffic": 0.6}]}, "traffic must sum to 1"),
    ({"arms": [{"name": "a", "traffic": 0.5}, {"name": "a", "traffic": 0.5}]}, "arm names must be distinct"),
    ({"arms": [{"name": "a", "traffic": 1.0, "version": 3}]}, "experiment.arms[0].version: a version is held"),
    ({"arms": [{"name": "a b", "traffic": 1.0}]}, "experiment.arms[0].name"),
    ({"arms": [{"name": "a", "traffic": 1.0, "follow": "sometimes"}]}, "experiment.arms[0].follow"),
])
def test_a_bad_experiment_is_refused_naming_the_key(experiment, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"experiment": experiment})


@pytest.fixture
def armed(trained):
    """A server with a frozen control (80%) and a treatment following every version (20%)."""
    trained.learn(trained.chunks[0])
    trained.publisher.publish_full()
    service = ModelService(trained.registry, sink=LiveQueue(FIELDS))
    with TestClient(create_app(service, ServeConfig(experiment=ExperimentSection(**ARMS)))) as client:
        service.sync()
        client.experiment_sync = lambda: [s.sync() for s in client.app.experiment.followers()]
        client.experiment_sync()
        yield client, trained


def _user_in(client, arm: str) -> int:
    return next(u for u in range(1000) if client.app.experiment.splitter.arm_of(u) == arm)


def test_each_arm_answers_its_users_and_follows_the_registry_its_own_way(armed) -> None:
    client, trained = armed
    control, treatment = _user_in(client, "control"), _user_in(client, "treatment")
    first = client.post("/predict", json={"user": control, "candidates": [1, 2]}).json()
    assert first["arm"] == "control"
    assert client.post("/recommend", json={"user": treatment}).json()["arm"] == "treatment"
    trained.learn(trained.chunks[1])
    newest = trained.publisher.registry.delta_versions()[-1]
    client.experiment_sync()
    assert client.post("/predict", json={"user": control, "candidates": [1]}).json()["version"] == first["version"]
    assert client.post("/predict", json={"user": treatment, "candidates": [1]}).json()["version"] == newest
    figures = client.get("/arms").json()["arms"]
    assert (figures["control"]["version"], figures["treatment"]["version"]) == (first["version"], newest)
    assert figures["control"]["requests"] == 2 and figures["treatment"]["requests"] == 2
    metrics = client.get("/metrics").text
    assert 'freshrec_arm_requests_total{arm="treatment"} 2.0' in metrics
    assert f'freshrec_arm_model_version{{arm="control"}} {first["version"]}.0' in metrics


def test_labelled_events_count_for_the_arm_named_or_the_users_arm(armed) -> None:
    client, _ = armed
    control, treatment = _user_in(client, "control"), _user_in(client, "treatment")
    events = [{"user": control, "item": 1, "label": 1}, {"user": control, "item": 2, "label": 0},
              {"user": control, "item": 3, "label": 1, "arm": "treatment"},   # as an answer named it
              {"user": treatment, "item": 4}]                                  # unlabelled: not counted
    assert client.post("/events", json={"events": events}).status_code == 202
    tallies = client.get("/arms").json()["tallies"]
    assert (tallies["control"]["labelled"], tallies["control"]["clicks"]) == (2, 1)
    assert (tallies["treatment"]["labelled"], tallies["treatment"]["clicks"]) == (1, 1)


def test_an_event_naming_an_unknown_arm_is_a_422_and_nothing_is_queued(armed) -> None:
    client, _ = armed
    answer = client.post("/events", json={"events": [{"user": 1, "item": 1, "label": 1},
                                                     {"user": 1, "item": 2, "label": 1, "arm": "nope"}]})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "unknown arm 'nope'; this server's arms: control, treatment"
    assert client.get("/arms").json()["tallies"]["control"]["labelled"] == 0


def test_without_an_experiment_answers_say_no_arm_and_an_arm_in_an_event_is_refused(trained) -> None:
    trained.publisher.publish_full()
    service = ModelService(trained.registry, sink=LiveQueue(FIELDS))
    with TestClient(create_app(service)) as client:
        service.sync()
        assert client.post("/predict", json={"user": 1, "candidates": [1]}).json()["arm"] is None
        assert client.get("/arms").json() == {"salt": None, "arms": {}, "tallies": {}}
        answer = client.post("/events", json={"user": 1, "item": 1, "label": 1, "arm": "a"})
        assert answer.status_code == 422 and "no experiment" in answer.json()["detail"]


def test_figures_give_the_wilson_interval_the_lift_and_the_percentiles() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    fast, slow = ArmTally(), ArmTally()
    for _ in range(99):
        fast.record_request(0.001, 0.0005, items=10)
    fast.record_request(0.2, 0.0005, items=10)
    slow.record_request(0.05, 0.04, items=10)
    figures = arm_figures({"fast": fast, "slow": slow}, cpu_cost_per_hour=3.6)
    assert figures["fast"]["p50_ms"] == pytest.approx(1.0) and figures["fast"]["p99_ms"] == pytest.approx(1.0)
    assert figures["slow"]["p99_ms"] == pytest.approx(50.1)
    assert figures["slow"]["cost_per_million_requests"] == pytest.approx(40.0)   # 40 ms of a $3.6 hour, 1M times
    assert figures["fast"]["ctr"] is None and figures["slow"]["lift"] is None


def test_the_arms_log_adds_up_every_process_and_evaluate_arms_reports_it(tmp_path) -> None:
    first, second = ArmTally(labelled=1000, clicks=100), ArmTally(labelled=1000, clicks=200)
    (tmp_path / "arms-host-1.json").write_text(json.dumps({"a": first.to_dict(), "b": ArmTally().to_dict()}))
    (tmp_path / "arms-host-2.json").write_text(json.dumps({"a": ArmTally().to_dict(), "b": second.to_dict()}))
    tallies = ArmsLog.read(tmp_path)
    assert list(tallies) == ["a", "b"] and tallies["b"].clicks == 200
    result = CliRunner().invoke(cli, ["evaluate", "arms", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert report["winner"] == "b" and report["control"] == "a"
    assert report["arms"]["b"]["lift"] == pytest.approx(1.0)
    table = CliRunner().invoke(cli, ["evaluate", "arms", str(tmp_path)])
    assert "winner: b" in table.output and "+100.0%" in table.output, table.output


@pytest.mark.parametrize(("content", "message"), [
    (None, "no arms-*.json"),
    ("not json", "arms-x-1.json"),
    (json.dumps({"a": {"requests": 1, "bogus": 2}}), "not an arm tally"),
])
def test_evaluate_arms_names_what_is_wrong_with_the_log(tmp_path, content, message) -> None:
    if content is not None:
        (tmp_path / "arms-x-1.json").write_text(content)
    result = CliRunner().invoke(cli, ["evaluate", "arms", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output


def test_evaluate_arms_refuses_an_unknown_device_class(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "arms", str(tmp_path), "--device-class", "TPU"])
    assert result.exit_code == 2 and "no 'TPU' in devices.classes" in result.output
