"""`freshrec produce` against a real broker: a data set's events, consumed back by `KafkaSource`,
arrive once each and each user's in order, as JSON or as batch messages; the README's command runs;
bad options are usage errors naming the option."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import need_real_data
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.events.datasets import ColumnMapping, open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.kafka import KafkaSource

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a broker and a CLI process, waited on
README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = 3000
MAPPING = ["--user", "userId", "--item", "movieId", "--time", "timestamp", "--label", "rating>=4", "--multi", "genres"]


def _ratings(path: Path) -> Path:
    """A ratings log of ROWS rows, 40 users, not in time order (the reader sorts it)."""
    rng = np.random.default_rng(3)
    times = rng.permutation(ROWS) + 1_500_000_000
    genres = ["Drama", "Action|Comedy", "Sci-Fi|Drama|War", 'Film-"Noir"']
    lines = ["userId,movieId,rating,timestamp,genres"] + [
        f"{rng.integers(1, 41)},{rng.integers(1, 500)},{rng.integers(1, 6)},{t},{genres[t % 4]}" for t in times]
    path.write_text("\n".join(lines) + "\n")
    return path


def _by_user(rows: list[dict]) -> dict[str, list[tuple]]:
    users = defaultdict(list)
    for row in rows:
        users[str(row["user_id"])].append((str(row["item_id"]), row["ts"], row["label"], tuple(row["genres"])))
    return users


@pytest.mark.parametrize("batch", [False, True], ids=["json", "batch-messages"])
def test_a_produced_data_set_is_consumed_back_once_each_in_user_order(broker: str, tmp_path: Path,
                                                                     batch: bool) -> None:
    path = _ratings(tmp_path / "ratings.csv")
    done = CliRunner().invoke(app, ["produce", "--format", "csv", "--data", str(path), *MAPPING, "--bootstrap", broker,
                                    "--topic", "ratings", "--partitions", "3", "--json", "--quiet",
                                    "--dead-letters", str(tmp_path / "dead.jsonl")]
                              + (["--batch-messages"] if batch else []))
    assert done.exit_code == 0, done.output
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["events"] == ROWS and figures["partitions"] == 3 and figures["dead_letters"] == 0
    assert figures["messages"] == ROWS if not batch else 3 <= figures["messages"] < 10   # a message per partition
    assert {"seconds", "events_per_s"} <= set(figures)
    replay = open_source("csv", path, MemoryDeadLetters(), mapping=ColumnMapping(
        "userId", "movieId", "timestamp", "rating>=4", multi=("genres",)))
    expected = [row for chunk in replay for row in chunk.table.to_pylist()]
    source = KafkaSource(broker, "ratings", "check", replay.fields, MemoryDeadLetters(), idle_timeout=2.0)
    chunks = list(source)
    source.close()
    got = [row for chunk in chunks for row in chunk.table.to_pylist()]
    assert len(got) == ROWS and source.dead_letters.total == 0
    assert _by_user(got) == _by_user(expected)   # every event once, each user's in the order of the data set
    partitions = Counter(int(p) >> 40 for chunk in chunks for p in chunk.positions)
    assert len(partitions) == 3   # the users spread over the partitions


def test_the_readme_command_produces_movielens(broker: str, tmp_path: Path) -> None:
    root = need_real_data("movielens-100k").parent
    commands = [line.split("#")[0].strip() for line in README.read_text().replace("\\\n", " ").splitlines()
                if line.startswith(".venv/bin/freshrec produce")]
    assert commands
    for command in commands:
        args = [arg.replace("127.0.0.1:9092", broker) for arg in command.split()[1:]]
        env = {"FRESHREC_DATA": str(root), "PATH": "", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
        done = subprocess.run([sys.executable, "-m", "freshrec.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert figures["events"] == figures["messages"] == 100_000 and figures["topic"] == "ratings"


@pytest.mark.parametrize(("args", "says"), [
    (["--partitions", "0"], "--partitions: expected a number >= 1, got 0"),
    (["--kafka-setting", "no.such.setting=1"], "--kafka-setting (source.kafka.settings): No such configuration"),
    (["--kafka-setting", "linger.ms"], "--kafka-setting takes KEY=VALUE"),
    (["--topic", ""], "--topic (source.kafka.topic)"),
    (["--format", "csv", "--data", "ratings.csv"], "source.columns: format 'csv' needs a column mapping"),
])
def test_a_bad_option_is_a_usage_error_naming_it(args: list[str], says: str) -> None:
    done = CliRunner().invoke(app, ["produce", "--format", "simulator", "--limit", "10", "--bootstrap", "127.0.0.1:1",
                                    *args])
    assert done.exit_code == 2, done.output
    assert re.sub(r"\s+", " ", done.stderr).startswith(f"error: {says}"), done.stderr
