"""The Prometheus alert rules and the Grafana dashboard shipped in deploy/: promtool checks the rules and
runs their unit tests, the dashboard is what deploy/grafana/dashboard.py builds and loads into Grafana's
dashboard model, promtool parses each of its queries, and every freshrec metric they name is one the
product exports."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from freshrec._durable import WRITE_FAULTS
from freshrec.config import ExperimentSection
from freshrec.metrics.alerts import ALERT_METRICS
from freshrec.metrics.prometheus import TRAINING_METRICS, ServingMetrics
from freshrec.metrics.sources import SOURCE_METRICS
from freshrec.serve import ModelService
from freshrec.serve.arms import Experiment
from freshrec.snapshot import ModelRegistry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES, RULE_TESTS = DEPLOY / "prometheus" / "freshrec-alerts.yml", DEPLOY / "prometheus" / "freshrec-alerts-test.yml"
DASHBOARD = DEPLOY / "grafana" / "freshrec.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make setup` installs it (Debian's prometheus package)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def exported() -> set[str]:
    """The name of every sample freshrec's registries can expose (a server's with a live experiment)."""
    names = set()
    experiment = Experiment(ExperimentSection(arms=[{"name": "a", "traffic": 1.0}]),
                            {"a": ModelService(ModelRegistry(tempfile.mkdtemp()))})
    for registry in (ServingMetrics().registry, TRAINING_METRICS, ALERT_METRICS, SOURCE_METRICS, WRITE_FAULTS,
                     experiment):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
            for target in panel.get("targets", [])]


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_dashboard_is_what_its_script_builds_and_loads_into_grafanas_model() -> None:
    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = json.loads(DASHBOARD.read_text())
    assert committed == script.build(), "run `.venv/bin/python deploy/grafana/dashboard.py` and commit the file"
    model = Dashboard.from_json(committed)
    assert model.uid == "freshrec" and len([p for p in model.panels if p.type_val != "row"]) == 16


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"freshrec:panel_{k}", "expr": expr}
                                                        for k, expr in enumerate(dashboard_queries())]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_named_is_one_freshrec_exports(source: str) -> None:
    text = RULES.read_text() if source == "rules" else "\n".join(dashboard_queries())
    named = set(re.findall(r"\b(freshrec_[a-z_]+)", text))
    assert named and named <= exported(), sorted(named - exported())
