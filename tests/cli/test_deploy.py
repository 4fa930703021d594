"""`freshrec deploy`: the manifests as YAML on stdout or in --out; exit 2 naming a bad key or option."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from freshrec.autoscale.manifests import manifests
from freshrec.cli import app
from freshrec.config import load_config

CONFIG = """\
gpu: {type: A100, count: 8, autoscale: true}
training: {offline_interval: null}
autoscale: {name: recs, namespace: ml, min: 2, max: 8}
serve: {port: 8100}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "freshrec.yaml"
    path.write_text(text)
    return path


def test_deploy_writes_the_manifests_of_the_config(tmp_path: Path) -> None:
    config, out = write(tmp_path, CONFIG), tmp_path / "k8s" / "freshrec.yaml"
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "registry.example/freshrec:0.1",
                                    "--out", str(out), "--servers", "3", "--storage", "200Gi"])
    assert done.exit_code == 0, done.stderr
    assert f"wrote 10 objects to {out} (mode 600: it holds the config's secrets): kubectl apply -f {out}" \
        in done.stderr and done.stdout == ""
    assert out.stat().st_mode & 0o777 == 0o600
    objects = list(yaml.safe_load_all(out.read_text()))
    assert objects == manifests(load_config(config), "registry.example/freshrec:0.1", servers=3, storage="200Gi")
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    assert names[:4] == ["Secret/recs-config", "PersistentVolumeClaim/recs-state", "Service/recs-trainer",
                         "StatefulSet/recs-trainer"]
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}


def test_deploy_prints_to_stdout_and_takes_the_offline_interval_flag(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG.replace("training: {offline_interval: null}", "training: {offline_interval: 6h}"))
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "img"])
    assert done.exit_code == 2
    assert "training.offline_interval: a worker group does not retrain offline yet; add --offline-interval off" \
        in done.stderr
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "img", "--offline-interval", "off"])
    assert done.exit_code == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    statefulset = next(o for o in objects if o["kind"] == "StatefulSet")
    assert "--nnodes=2:8" in statefulset["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "offline_interval: null" in objects[0]["stringData"]["freshrec.yaml"]


def test_a_bad_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG.replace("min: 2", "mn: 2"))
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "img"])
    assert done.exit_code == 2
    assert "autoscale.mn: unknown key 'mn'" in done.stderr and done.stdout == ""
    config = write(tmp_path, CONFIG.replace("name: recs", "name: 9recs"))
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "img"])
    assert done.exit_code == 2 and "autoscale.name: '9recs' must start with a letter" in done.stderr


def test_bad_options_exit_2_naming_them(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG)
    done = CliRunner().invoke(app, ["deploy", "--config", str(config), "--image", "img", "--storage", "lots"])
    assert done.exit_code == 2 and "storage 'lots': expected a quantity like 50Gi" in done.stderr
    done = CliRunner().invoke(app, ["deploy", "--config", str(config)])
    assert done.exit_code == 2 and "--image" in done.stderr
