"""The `freshrec` command end to end: in a subprocess (the installed script) and in-process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import need_real_data
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.events.datasets import fetch
from freshrec.events.deadletter import read_dead_letters
from freshrec.events.simulator import write_criteo_tsv

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
README = Path(__file__).resolve().parents[2] / "README.md"


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    if env is not None and "PYTHONPATH" in os.environ:   # the code under test, installed or not
        env = {**env, "PYTHONPATH": os.environ["PYTHONPATH"]}
    return subprocess.run(FRESHREC + args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_replay_a_csv_it_has_never_seen(tmp_path: Path) -> None:
    """A MovieLens-latest-small style ratings.csv: userId,movieId,rating,timestamp."""
    rng = np.random.default_rng(0)
    rows = 3_000
    ratings = rng.integers(1, 11, rows) / 2
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u},{m},{r},{t}" for u, m, r, t in zip(rng.integers(1, 600, rows), rng.integers(1, 9000, rows),
                                                 ratings, rng.integers(828124615, 1537799250, rows))]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    done = _run(["replay", "--data", "ratings.csv", "--format", "csv", "--user", "userId", "--item", "movieId",
                 "--time", "timestamp", "--label", "rating>=4", "--dry-run", "--json", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = _last_json(done.stdout)
    assert figures["rows"] == rows and figures["dead_letters"] == 0
    assert figures["positives"] == int((ratings >= 4).sum())
    assert {"rows_per_s", "seconds"} <= set(figures)   # figures of speed belong in bench/
    assert figures["batches"] == rows   # events seconds apart: each its own micro-batch (the 1 ms window)


def test_corrupted_criteo_counts_add_up(tmp_path: Path) -> None:
    path = tmp_path / "day.txt"
    write_criteo_tsv(path, 2_000, seed=5)
    lines = path.read_text().split("\n")
    for index in (10, 500, 1999):
        lines[index] = "1\tnot\ta\tcriteo\tline"
    path.write_text("\n".join(lines))
    done = _run(["replay", "--format", "criteo", "--data", str(path), "--json", "--quiet",
                 "--dead-letters", "dead.jsonl"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = _last_json(done.stdout)
    assert figures["rows"] == 1_997 and figures["dead_letters"] == 3
    assert figures["dead_letter_reasons"] == {"column_count": 3}
    assert [d.position for d in read_dead_letters(tmp_path / "dead.jsonl")] == [11, 501, 2000]


@pytest.mark.parametrize("args, code, message", [
    (["replay", "--format", "nope", "--data", "x"], 2, "error: --format (source.format): expected one of 'criteo',"),
    (["replay", "--format", "criteo", "--data", "absent.txt"], 1, "error: criteo: no file or folder at absent.txt"),
    (["replay", "--format", "csv", "--data", "x.csv", "--user", "u"], 2,
     "error: --item (source.columns.item): missing (a required key); --time (source.columns.time): missing"),
    (["replay", "--format", "csv", "--data", "ratings.csv", "--user", "u", "--item", "movieId", "--time", "timestamp"],
     2, "error: ratings.csv: no column 'u'; available columns: 'userId',"),
    (["replay", "--format", "csv", "--data", "ratings.csv", "--user", "userId", "--item", "movieId", "--time",
      "timestamp", "--label", "rating=>4"], 2,
     "error: --label (source.columns.label): bad label expression 'rating=>4'"),
    (["replay", "--format", "simulator", "--speed", "-1"], 2,
     "error: --speed (source.speed): expected a number > 0.0, got -1.0"),
    (["replay", "--format", "simulator", "--batch-size", "0"], 2,
     "error: --batch-size (training.online_batch_size): expected a number >= 1, got 0"),
    (["replay", "--format", "csv", "--data", "ratings.csv", "--user", "userId", "--item", "movieId", "--time",
      "genres"], 1, "error: every record was rejected (2 dead letters in dead_letters.jsonl): nothing to replay"),
    (["run", "--format", "simulator", "--dim", "0"], 2, "error: --dim (model.dim): expected a number >= 1, got 0"),
    (["run", "--config", "absent.yaml"], 2, "error: absent.yaml: no such config file"),
    (["evaluate", "ab", "--format", "simulator", "--fusion", "none"], 2, "error: fusion 'none' is not"),
])
def test_bad_usage_is_one_clear_line(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp,genres\n"
                                          "1,31,2.5,1260759144,Drama\n2,10,4.0,1260759179,Action|Comedy\n")
    done = _run(args, tmp_path)
    assert done.returncode == code
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_speed_needs_event_time(tmp_path: Path) -> None:
    path = tmp_path / "day.txt"
    write_criteo_tsv(path, 10, seed=1)
    done = _run(["replay", "--format", "criteo", "--data", str(path), "--speed", "60"], tmp_path)
    assert done.returncode == 2 and "source.speed: criteo has no event time to pace by" in done.stderr


def test_datasets_lists_the_shared_data(tmp_path: Path) -> None:
    root = need_real_data("movielens-100k").parent
    done = _run(["datasets", "--json"], tmp_path, env={"FRESHREC_DATA": str(root), "PATH": ""})
    assert done.returncode == 0, done.stderr
    formats = [d["format"] for d in _last_json(done.stdout)["datasets"]]
    assert {"criteo", "avazu", "movielens-100k", "open-bandit"} <= set(formats)
    assert formats.count("open-bandit") == 6


def test_make_run_path_uses_shared_movielens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `make run RUN_ARGS=--exit-at-end` does: the engine over MovieLens-100k with the server, then a
    summary."""
    root = need_real_data("movielens-100k").parent
    monkeypatch.setenv("FRESHREC_DATA", str(root))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app, ["run", "--format", "movielens-100k", "--fallback", "simulator", "--exit-at-end",
                                      "--json", "--quiet", "--state", str(tmp_path / "state"), "--port", str(port)])
    assert result.exit_code == 0, result.output
    figures = _last_json(result.stdout)
    assert figures["events"] == figures["learned"] == figures["logged"] == 100_000
    assert figures["positive_rate"] == pytest.approx(0.55375) and figures["served_version"] >= 1
    assert figures["auc"] > 0.65 and figures["format"] == "movielens-100k"
    assert figures["checkpoints"] == 2            # training.checkpoint_events 50,000 (config default) and the end
    assert figures["offline"]["published"] >= 1   # training.offline_interval 6h (config default)


def test_without_data_or_network_it_says_it_replays_the_simulator(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("FRESHREC_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    result = CliRunner().invoke(app, ["replay", "--format", "movielens-100k", "--fallback", "simulator",
                                      "--limit", "5000", "--json", "--quiet",
                                      "--dead-letters", str(tmp_path / "d.jsonl")])
    assert result.exit_code == 0, result.output
    assert "replaying the simulator instead" in result.stderr
    figures = _last_json(result.stdout)
    assert figures["format"] == "simulator" and figures["rows"] == 5_000
    failed = CliRunner().invoke(app, ["replay", "--format", "movielens-100k"])
    assert failed.exit_code == 1 and "cannot download" in failed.stderr


def _readme_commands() -> list[str]:
    text = re.search(r"## Quick start\n\n```sh\n(.*?)```", README.read_text(), re.S).group(1)
    joined = text.replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in joined.splitlines() if line.startswith(".venv/bin/freshrec")]


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_quick_start_commands_run(tmp_path: Path, command: str) -> None:
    root = need_real_data("movielens-100k").parent
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp,genres\n"
                                          "1,31,2.5,1260759144,Drama\n2,10,4.0,1260759179,Action|Comedy\n")
    args = command.split()[1:]
    args = [a.replace("../shared/data", str(root)) for a in args]
    done = _run([a.strip("'") for a in args], tmp_path, env={"FRESHREC_DATA": str(root), "PATH": ""})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args", [["run", "--format", "simulator", "--limit", "10"],
                                  ["run", "--format", "simulator", "--limit", "10", "--workers", "2",
                                   "--offline-interval", "off"],
                                  ["replay", "--format", "simulator", "--limit", "10", "--model", "lr", "--serve"]])
def test_a_busy_port_is_a_usage_error_before_serving(tmp_path: Path, args: list[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run([*args, "--port", str(port), "--state" if args[0] == "run" else "--registry",
                     str(tmp_path / "state")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --port (serve.port): cannot listen on 127.0.0.1:{port}")
    assert "serving on" not in done.stderr and done.stderr.count("\n") == 1


def test_a_rerun_continues_to_a_larger_limit_and_says_when_it_has_nothing_to_do(tmp_path: Path) -> None:
    def run(limit: int):
        return CliRunner().invoke(app, ["run", "--format", "simulator", "--limit", str(limit), "--no-serve",
                                        "--state", str(tmp_path / "state"), "--chunk", "1000", "--json", "--quiet"])

    first, again, more = run(3000), run(3000), run(5000)
    assert first.exit_code == again.exit_code == more.exit_code == 0, (first.output, again.output, more.output)
    assert _last_json(first.stdout)["learned"] == 3000
    assert "nothing new: the state in" in again.stderr and "--limit 3,000 counts events from the start" in again.stderr
    assert _last_json(again.stdout)["rows"] == 0
    figures = _last_json(more.stdout)
    assert figures["rows"] == 2000 and figures["learned"] == 5000 and figures["restored_from"] is not None


def test_flags_override_the_config_file_and_print_config_shows_the_result(tmp_path: Path) -> None:
    (tmp_path / "freshrec.yaml").write_text("training: {online_batch_size: 256, checkpoint_events: 1000}\n"
                                            "gpu: {type: A100, count: 8}\n")
    done = _run(["run", "--config", "freshrec.yaml", "--batch-size", "64", "--print-config"], tmp_path)
    assert done.returncode == 0, done.stderr
    shown = yaml.safe_load(done.stdout)
    assert shown["training"]["online_batch_size"] == 64 and shown["training"]["checkpoint_events"] == 1000
    assert shown["gpu"] == {"type": "A100", "count": 8, "device": "auto", "precision": "fp32", "autoscale": False}
    run = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "freshrec.yaml"), "--format", "simulator",
                                   "--limit", "2000", "--no-serve", "--state", str(tmp_path / "s"), "--json"])
    assert run.exit_code == 0, run.output
    note = "gpu: 8 x A100 asked for: no GPU on this machine: learning on the CPU, fp32"
    assert note in run.stderr and _last_json(run.stdout)["gpu"] == note


def _ratings_csv(path: Path, rows: int = 2_000) -> None:
    rng = np.random.default_rng(1)
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u},{m},{r},{t}" for u, m, r, t in zip(rng.integers(1, 50, rows), rng.integers(1, 80, rows),
                                                 rng.integers(1, 6, rows), np.sort(rng.integers(1e9, 1.1e9, rows)))]
    path.write_text("\n".join(lines) + "\n")


MAPPING = ["--format", "csv", "--data", "ratings.csv", "--user", "userId", "--item", "movieId", "--time",
           "timestamp", "--label", "rating>=4"]


def test_a_csv_mapping_takes_target_and_ordinal_levels(tmp_path: Path) -> None:
    _ratings_csv(tmp_path / "ratings.csv")
    done = _run(["replay", *MAPPING, "--model", "fm", "--target", "rating", "--ordinal-levels", "2,3,5",
                 "--json", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _last_json(done.stdout)["rows"] == 2_000


def test_evaluate_ab_takes_the_same_source_options(tmp_path: Path) -> None:
    _ratings_csv(tmp_path / "ratings.csv")
    done = _run(["evaluate", "ab", *MAPPING, "--arms", "online", "--limit", "1500", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(_last_json(done.stdout)["arms"]) == {"online"}


def test_serve_takes_its_port_from_the_config_and_refuses_a_busy_one(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "freshrec.yaml").write_text(f"serve: {{port: {port}}}\n")
        done = CliRunner().invoke(app, ["serve", "--registry", str(tmp_path), "--config",
                                        str(tmp_path / "freshrec.yaml")])
    assert done.exit_code == 2 and done.stderr.startswith("error: --port (serve.port): cannot listen"), done.output
