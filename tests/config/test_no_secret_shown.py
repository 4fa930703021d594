"""No secret in what freshrec prints or logs: the Kafka password and a webhook's password are hidden by
`config show` and `--print-config` (kept where the file must work: a deployment's config), and the
server's bearer tokens appear in no log line and no answer, whatever the requests."""

from __future__ import annotations

import logging

import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from freshrec.cli import app as cli
from freshrec.config import load_config, parse_config, show_config
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ModelService, ServeConfig, create_app

PASSWORD, HOOK_PASSWORD, ADMIN, EVENTS = "kafka-hunter2", "hook-pw-77", "admin-tok-42", "events-tok-43"
CONFIG = {"source": {"kafka": {"settings": {"sasl.password": PASSWORD, "sasl.username": "bob"}}},
          "alerts": {"webhook": f"https://bob:{HOOK_PASSWORD}@hooks.example/alerts"}}


def test_config_show_and_print_config_hide_the_passwords(tmp_path) -> None:
    path = tmp_path / "freshrec.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    for args in (["config", "show", str(path)], ["run", "--config", str(path), "--print-config"]):
        shown = CliRunner().invoke(cli, args)
        assert shown.exit_code == 0, shown.output
        assert PASSWORD not in shown.output and HOOK_PASSWORD not in shown.output
        assert "sasl.password: <hidden>" in shown.output and "https://bob:<hidden>@hooks.example" in shown.output
        assert "sasl.username: bob" in shown.output


def test_a_deployments_config_keeps_them_and_reads_back_equal(tmp_path) -> None:
    config = parse_config(CONFIG)
    path = tmp_path / "deployed.yaml"
    path.write_text(show_config(config, secrets=True))
    assert load_config(path) == config


def test_a_copy_of_config_show_is_refused_naming_each_hidden_secret(tmp_path) -> None:
    """Run with `<hidden>` as the Kafka password, it would fail at the broker, far from the cause."""
    path = tmp_path / "copied.yaml"
    path.write_text(show_config(parse_config(CONFIG)))
    done = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert done.exit_code == 2
    assert "source.kafka.settings.sasl.password: '<hidden>' stands where `config show` hid a secret" in done.stderr
    assert "alerts.webhook: '<hidden>' stands where" in done.stderr


def test_the_tokens_are_in_no_log_line_and_no_answer(trained, caplog) -> None:
    trained.learn(trained.chunks[0])
    service = ModelService(trained.registry, sink=LiveQueue(FIELDS))
    caplog.set_level(logging.DEBUG)
    answers = []
    with TestClient(create_app(service, ServeConfig(admin_token=ADMIN, events_token=EVENTS))) as client:
        service.sync()
        for token in (ADMIN, EVENTS, ADMIN[:-1], "wrong"):
            for method, path, body in (("POST", "/admin/rollback", None), ("POST", "/admin/swap", {"version": 99}),
                                       ("POST", "/events", {"user": 1, "item": 2, "label": 1}),
                                       ("GET", "/metrics", None), ("GET", "/model", None)):
                answer = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                answers.append(answer.text + str(dict(answer.headers)))
        assert client.post("/events", json={"user": 1, "item": 2},
                           headers={"Authorization": f"Bearer {EVENTS}"}).status_code == 202
    seen = caplog.text + "".join(answers)
    assert ADMIN not in seen and EVENTS not in seen and ADMIN[:-1] not in seen
