"""`freshrec run --workers N` with a setting a worker group does not support yet is refused, each
setting named with the flag that turns it off, before any worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.cluster.group import LAUNCH_ENV
from freshrec.config import ConfigError, parse_config
from freshrec.engine.build import worker_device


def test_a_group_names_every_setting_it_cannot_run(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--limit", "100", "--workers", "2",
                                    "--state", str(tmp_path / "state"), "--share", "x"])
    assert done.exit_code == 2, done.stderr
    for flag in ("add --offline-interval off", "--share (sync.share)"):
        assert flag in done.stderr
    assert not (tmp_path / "state").exists()


def test_a_rank_under_ones_own_torchrun_does_not_serve(tmp_path: Path, monkeypatch) -> None:
    for name, value in zip(LAUNCH_ENV, ("0", "2", "127.0.0.1", "29400")):
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--offline-interval", "off",
                                    "--state", str(tmp_path / "group")])
    assert done.exit_code == 2, done.stderr
    assert "--serve (serve.enabled): the ranks of a group do not serve; add --no-serve" in done.stderr
    assert f"freshrec serve --registry {tmp_path / 'group' / 'registry'}" in done.stderr


def test_config_check_refuses_it_too(tmp_path: Path) -> None:
    path = tmp_path / "group.yaml"
    path.write_text("training:\n  workers: 3\njoin:\n  window: 10s\n")
    done = CliRunner().invoke(app, ["config", "check", str(path)])
    assert done.exit_code == 2 and "join.window: a worker group does not join impressions yet" in done.stderr


def test_zero_workers_is_a_bad_value(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run", "--workers", "0", "--state", str(tmp_path / "state")])
    assert done.exit_code == 2 and "--workers (training.workers)" in done.stderr, done.stderr


def test_a_group_and_a_single_process_do_not_share_a_state(tmp_path: Path) -> None:
    single, group = tmp_path / "single", tmp_path / "group"
    (single / "checkpoints" / "ckpt-000000000001").mkdir(parents=True)
    (group / "cuts").mkdir(parents=True)
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--workers", "2", "--no-serve",
                                    "--offline-interval", "off", "--state", str(single)])
    assert done.exit_code == 2 and "holds a one-process run's checkpoints" in done.stderr, done.stderr
    assert not (single / "group-config.yaml").exists()
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--no-serve", "--state", str(group)])
    assert done.exit_code == 2 and "holds a worker group's run: go on with --workers N" in done.stderr, done.stderr


def test_a_group_on_gpus_names_what_it_cannot_do(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--workers", "2", "--no-serve",
                                    "--offline-interval", "off", "--device", "cuda:1", "--precision", "fp16",
                                    "--state", str(tmp_path / "state")])
    assert done.exit_code == 2, done.stderr
    assert "--device (gpu.device): cuda:1: each worker of a group learns on a GPU of its own" in done.stderr
    assert "--precision (gpu.precision): fp16: a worker group does not scale its gradients yet" in done.stderr


def test_a_group_asked_to_learn_on_gpus_is_refused_before_it_starts_where_there_are_none(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--workers", "2", "--no-serve",
                                    "--offline-interval", "off", "--device", "cuda", "--state", str(tmp_path / "s")])
    assert done.exit_code == 2 and "torch sees no CUDA device here" in done.stderr, done.stderr
    assert not (tmp_path / "s" / "group-config.yaml").exists()


def test_each_worker_needs_a_gpu_of_its_own() -> None:
    config = parse_config({"gpu": {"device": "cuda"}})
    assert [worker_device(config, rank, gpus=3) for rank in range(3)] == ["cuda:0", "cuda:1", "cuda:2"]
    with pytest.raises(ConfigError, match=r"of its own \(gpu.device cuda\), and this machine has 2: run at most 2"):
        worker_device(config, 2, gpus=2)
    assert worker_device(parse_config({}), 2, gpus=2) == "cpu"   # gpu.device auto and no gpu.count: the CPU
