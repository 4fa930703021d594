"""`freshrec autoscale`: the article's command as written, `--dry-run` on a recorded trace (its decisions on
stderr, a summary line), refusals that name the key or the trace's line (exit 2), and every key of the
`autoscale` and `devices` sections changing what the command does: the dry run's decisions, or what the
live command builds (its executor and metric reader replaced here by recorders that end the group at once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import readme_block_commands
from typer.testing import CliRunner

import freshrec.autoscale.controller as controller
import freshrec.autoscale.kubernetes as kubernetes
import freshrec.autoscale.local as local
import freshrec.autoscale.metrics as metrics
from freshrec.cli import app
from freshrec.config import FreshrecConfig, show_config
from freshrec.devices import inventory

TRACE = "t,value\n0,1000\n15,30000\n30,30000\n45,9000\n60,20000\n75,2000\n90,1000\n400,1000\n800,500\n"


def autoscale(*args: str):
    return CliRunner().invoke(app, ["autoscale", *map(str, args)])


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "lag.csv"
    path.write_text(TRACE)
    return path


def summary(done) -> dict:
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dry_run_prints_each_decision_and_the_sizes_it_goes_through(trace: Path):
    done = autoscale("--metric", "lag", "--threshold", "5000", "--max-workers", "3", "--max-step-up", "1",
                     "--cooldown", "10s", "--dry-run", trace, "--json")
    out = summary(done)
    assert {k: out[k] for k in ("metric", "readings", "changes", "sizes", "final")} == \
        {"metric": "lag", "readings": 9, "changes": 4, "sizes": [1, 2, 3, 2, 1], "final": 1}
    cost = out["cost"]   # 800 s of the trace: the group's device-seconds against 3 CPUs all along
    assert cost["device_seconds"]["CPU"] == pytest.approx(out["mean_workers"] * 800)
    assert cost["peak_sized_cost"] == round(3 * 800 / 3600 * 0.05, 4) and 0 < cost["saving"] < 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 9 and "1 -> 2" in lines[1] and "scale up to 2 (limited to +1 per change)" in lines[1]


def test_the_articles_command_is_taken_as_written(tmp_path: Path):
    path = tmp_path / "util.jsonl"
    path.write_text("".join(json.dumps({"t": 40 * i, "value": v}) + "\n" for i, v in enumerate([0.95, 0.95, 0.5])))
    done = autoscale("--min-gpus", "1", "--max-gpus", "16", "--metric", "gpu_util", "--threshold", "70%",
                     "--dry-run", path, "--json")
    # 0.95 / 0.70 of 1 GPU -> 2, of 2 -> 3 (readings 40 s apart: past the cool-down)
    assert summary(done)["sizes"] == [1, 2, 3]


@pytest.mark.parametrize(("args", "named"), [
    (("--min-workers", "3", "--max-workers", "2"), "--min-workers (autoscale.min): 3 is above autoscale.max 2"),
    (("--metric", "gpu"), "--metric (autoscale.metric)"),
    (("--threshold", "seventy%"), "--threshold (autoscale.threshold)"),
    (("--max-step-down", "0"), "--max-step-down (autoscale.max_step_down)"),
])
def test_bad_settings_are_named(trace: Path, args: tuple[str, ...], named: str):
    done = autoscale(*args, "--dry-run", trace)
    assert done.exit_code == 2 and named in done.stderr, done.stderr


def test_a_bad_trace_line_is_named(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("t,value\n0,10\n15,lots\n")
    done = autoscale("--dry-run", path)
    assert done.exit_code == 2 and "bad.csv line 3" in done.stderr and "lots" in done.stderr, done.stderr


def test_lag_needs_a_kafka_source(tmp_path: Path):
    done = autoscale("--metric", "lag", "--offline-interval", "off", "--no-serve", "--state", tmp_path / "s")
    assert done.exit_code == 2 and "autoscale.metric lag: needs source.kind kafka" in done.stderr, done.stderr


class Recorder:
    """Stands in for an executor: records how it was made and what it was asked; the group ends at once."""

    def __init__(self, seen: dict, kind: str, *args: Any, **kwargs: Any) -> None:
        self.seen, self.size = seen, 0
        seen["executor"] = (kind, args[2:] if kind == "local" else args, kwargs)

    def current(self) -> int:
        return self.size

    def scale(self, workers: int) -> None:
        self.size = workers
        self.seen.setdefault("scaled", []).append(workers)

    def finished(self) -> int | None:
        return None if len(self.seen.get("read", [])) < 2 else 0

    def close(self) -> None:
        pass


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What the live command builds: executor, metric reader (its source and servers) and decisions."""
    seen: dict = {}

    class Reader:
        def read(self, now: float) -> float:
            seen.setdefault("read", []).append(now)
            return 40_000.0

    def reader(config, state, servers):
        seen["reader"] = (config.autoscale.metric, tuple(servers))
        return Reader()

    monkeypatch.setattr(local, "LocalExecutor", lambda *a, **k: Recorder(seen, "local", *a, **k))
    monkeypatch.setattr(kubernetes, "KubernetesExecutor", lambda *a, **k: Recorder(seen, "kubernetes", *a, **k))
    monkeypatch.setattr(metrics, "metric_reader", reader)

    class Controller(controller.Controller):
        def run(self, stop):
            seen["interval"] = self.autoscaler.policy.interval
            return super().run(stop)

    monkeypatch.setattr(controller, "Controller", Controller)
    return seen


GROUP = {"training": {"offline_interval": None}, "serve": {"enabled": False}}
KUBERNETES = {"autoscale.executor": "kubernetes"}
CHANGES: dict[str, tuple[dict, Any]] = {   # key: (the settings it needs beside it, a value other than the default)
    "autoscale.metric": ({}, "events_per_s"), "autoscale.threshold": ({}, "50%"), "autoscale.min": ({}, 2),
    "autoscale.max": ({}, 6), "autoscale.tolerance": ({}, 0.5), "autoscale.up_window": ({}, "20s"),
    "autoscale.down_window": ({}, "0s"), "autoscale.cooldown": ({}, "0s"), "autoscale.max_step_up": ({}, 1),
    "autoscale.max_step_down": ({}, 3), "autoscale.interval": ({}, "2ms"), "autoscale.executor": ({}, "kubernetes"),
    "autoscale.servers": ({}, ["http://s:8000"]), "autoscale.namespace": (KUBERNETES, "recsys"),
    "autoscale.name": (KUBERNETES, "shop"),
    "devices.classes": ({}, {"CPU": {"cost_per_hour": 1.0, "speed": 0.1, "tier": "cold"}}),
}
DRY_TRACE = "t,value\n0,0.12\n20,0.1\n25,0.9\n35,0.9\n36,0.3\n40,0.9\n41,0.02\n400,0.02\n800,0.02\n"


def _what_it_does(tmp_path: Path, live: dict, changes: dict, name: str) -> tuple:
    """(the dry run's decisions, what the live command built and asked) with `changes` to the config."""
    config = tmp_path / f"{name}.yaml"
    base = {**GROUP, "autoscale": {"metric": "cpu_util", "threshold": 0.1, "interval": "1ms"}}
    for key, value in changes.items():
        section, field = key.split(".")
        base.setdefault(section, {})[field] = value
    config.write_text(yaml.safe_dump(base))
    trace = tmp_path / "util.csv"
    trace.write_text(DRY_TRACE)
    dry = autoscale("--config", config, "--dry-run", trace, "--json")
    assert dry.exit_code == 0, dry.stderr
    live.clear()
    done = autoscale("--config", config, "--state", tmp_path / name, "--decisions", tmp_path / f"{name}.jsonl",
                     "--json")
    prices = summary(done)["cost"]["prices"]
    return dry.stderr, {k: v for k, v in live.items() if k != "read"}, prices


def test_every_key_of_the_autoscale_and_devices_sections_is_walked():
    shown = yaml.safe_load(show_config(FreshrecConfig()))
    keys = {f"{section}.{key}" for section in ("autoscale", "devices") for key in shown[section]}
    assert sorted(keys) == sorted(CHANGES)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_each_key_changes_what_autoscale_does(tmp_path: Path, live: dict, key: str):
    companions, value = CHANGES[key]
    before = _what_it_does(tmp_path, live, companions, "before")
    after = _what_it_does(tmp_path, live, {**companions, key: value}, "after")
    assert before != after, f"{key}: {value!r} changed nothing"


def readme_commands() -> list[list[str]]:
    return readme_block_commands("Elastic scaling: `freshrec autoscale`")


def test_the_readme_commands_are_the_ones_the_tests_run():
    """The Kafka group and the dry run on its decisions run in tests/integration/test_autoscale_group.py."""
    assert [args[:2] for args in readme_commands()] == [
        ["autoscale", "--format"], ["autoscale", "--dry-run"], ["autoscale", "--min-gpus"], ["devices"],
        ["deploy", "--image"]]


def test_the_readme_devices_and_deploy_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    devices = CliRunner().invoke(app, commands[3])
    assert devices.exit_code == 0, devices.stderr
    assert "trainer: the CPU (CPU)" in devices.stdout and "offline retraining: " in devices.stdout   # gpu.count 0
    deploy = CliRunner().invoke(app, commands[4])
    assert deploy.exit_code == 0, deploy.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all((tmp_path / "k8s.yaml").read_text())]
    assert kinds.count("Deployment") == 2 and "StatefulSet" in kinds and "Secret" in kinds


@pytest.mark.skipif(bool(inventory().gpus), reason="the refusal of a machine without NVML or GPU")
def test_the_readme_article_command_without_a_gpu_says_what_it_needs(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, readme_commands()[2])
    assert done.exit_code == 2 and "autoscale.metric gpu_util needs NVML" in done.stderr, done.stderr
