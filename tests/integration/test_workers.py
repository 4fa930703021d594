"""`freshrec run --workers N` on MovieLens-100k: 2 and 3 worker processes (torchrun, gloo) learn what
one process learns (prequential AUC, the same ids, each in exactly one shard); a worker killed with
SIGKILL makes the group restart and end with the model of a group never interrupted, every event
logged once; restarts with 2 -> 3 -> 2 workers keep every row and its optimizer state. The ranks
publish their parts of each version and a server (the launcher's) serves the whole model, the group's
final one at the end, after kills too. Kills are timed by progress (a committed cut on disk), never by
the clock."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port, need_real_data, wait_until

from freshrec.cluster import owners
from freshrec.cluster.cuts import latest_cut, rank_root
from freshrec.cluster.engine import assemble
from freshrec.engine.checkpoint import CheckpointStore
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.log import EventLog
from freshrec.serve import ModelService
from freshrec.snapshot import ModelRegistry

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
GROUP = ("--offline-interval", "off", "--quiet", "--json")


def _command(state: Path, workers: int, *extra: str, serve: bool = False) -> list[str]:
    serving = ("--port", str(free_port()), "--exit-at-end") if serve else ("--no-serve",)
    return FRESHREC + ["run", "--format", "movielens-100k", "--state", str(state), "--workers", str(workers),
                       *GROUP, *serving, *extra]


def _probe():
    source = open_source("movielens-100k", need_real_data("movielens-100k"), MemoryDeadLetters(), batch_size=2000)
    return FeaturePipeline(default_specs(source.fields)).build(next(iter(source)))


def _serves_the_final_model(state: Path) -> int:
    """A server on the group's registry (versions in parts) ends on the model of the group's last cut;
    returns the version it serves."""
    service = ModelService(ModelRegistry(state / "registry"))
    version = service.sync()
    final, probe = assemble(state).model.eval(), _probe()
    with service.switcher.lease() as replica, torch.no_grad():
        assert torch.equal(replica.model(probe), final(probe))
        assert replica.model.live_ids == final.live_ids
    return version


def _run(command: list[str]) -> dict:
    """The run's figures, with the end of its stderr as `stderr` (a restart shows there)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr[-6000:]}


def _shards(state: Path) -> list[dict[str, dict[str, np.ndarray]]]:
    """Each rank's tables (state dicts) at the group's newest committed cut."""
    cut = latest_cut(state)
    return [{name: table.state_dict() for name, table in
             CheckpointStore(rank_root(state, rank) / "checkpoints").load(cut["step"], continued=False)
             .trainer.model.tables.items()} for rank in range(cut["world"])]


def _positions(state: Path) -> list[tuple[str, int]]:
    """Every logged event of every rank's log (source, position)."""
    return [(chunk.source, int(p)) for folder in sorted(state.glob("rank-*"))
            for chunk in EventLog(folder / "log", []).read() for p in chunk.positions]


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict[int, tuple[Path, dict]]:
    """MovieLens-100k learned by 1, 2 and 3 workers (micro-batches of 512, cut by size)."""
    need_real_data("movielens-100k")
    root = tmp_path_factory.mktemp("workers")
    args = ("--batch-window", "off", "--checkpoint-events", "20000")
    return {workers: (root / f"w{workers}", _run(_command(root / f"w{workers}", workers, *args, serve=workers == 2)))
            for workers in (1, 2, 3)}


@pytest.mark.parametrize("workers", [2, 3])
def test_a_group_learns_what_one_process_learns(learned, workers: int) -> None:
    one, (state, figures) = learned[1][1], learned[workers]
    assert figures["restored_from"] is None, figures["stderr"]    # the group never failed
    assert figures["workers"] == workers and figures["events"] == figures["learned"] == one["events"] == 100_000
    assert figures["scored_rows"] == 100_000 and figures["failed_batches"] == 0
    assert abs(figures["auc"] - one["auc"]) <= 0.005, (figures["auc"], one["auc"])
    single = {name: table.state_dict()["ids"]
              for name, table in CheckpointStore(learned[1][0] / "checkpoints").latest().trainer.model.tables.items()}
    shards = _shards(state)
    for name, ids in single.items():
        parts = [shard[name]["ids"] for shard in shards]
        union = np.concatenate(parts)
        assert len(union) == len(set(union.tolist())) == len(ids)        # every id in exactly one shard
        assert set(union.tolist()) == set(ids.tolist())                    # the ids one process holds
        for rank, part in enumerate(parts):
            assert len(part) and bool((owners(part, workers) == rank).all())
    assert figures["bytes_per_row_asked"] > 0 and figures["collective_seconds"] > 0


def test_the_launcher_serves_the_whole_model_the_ranks_publish_in_parts(learned) -> None:
    state, figures = learned[2]
    registry = ModelRegistry(state / "registry")
    assert figures["served_version"] == registry.latest() == _serves_the_final_model(state)
    for version in registry.full_versions() + registry.delta_versions():
        kind = "full" if version in registry.full_versions() else "delta"
        parts = sorted(p.name for p in (state / "registry" / "parts" / kind / f"v{version:012d}").iterdir())
        assert parts == ["part-0-of-2", "part-1-of-2"]


def _step(state: Path) -> int:
    """The step of the group's newest committed cut (0 before any)."""
    return (latest_cut(state) or {"step": 0})["step"]


def _restarted(state: Path, old: set[int]) -> bool:
    """Whether every rank has written a pid that is not in `old` (a restarted group is up)."""
    pids = [(rank_root(state, rank) / "pid").read_text() if (rank_root(state, rank) / "pid").exists() else ""
            for rank in range(2)]
    return all(pid and int(pid) not in old for pid in pids)


def test_sigkill_of_workers_gives_the_uninterrupted_group_model(tmp_path: Path) -> None:
    """Two kills of a random worker at random cuts (micro-batches of 128 events, so a restored group's
    steps must fall where they fell in the uninterrupted run)."""
    need_real_data("movielens-100k")
    args = ("--limit", "30000", "--chunk", "2000", "--checkpoint-events", "2000", "--batch-window", "off",
            "--batch-size", "128")
    straight = _run(_command(tmp_path / "straight", 2, *args))
    assert straight["restored_from"] is None, straight["stderr"]    # the group never failed
    rng = random.Random(5)
    state = tmp_path / "crashed"
    log = (tmp_path / "crashed.stderr").open("w")   # the kills' tracebacks, for a failure's message
    launcher = subprocess.Popen(_command(state, 2, *args), stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        killed: set[int] = set()
        for _ in range(2):
            wait_until(lambda: _restarted(state, killed), "the group (restarted) up", launcher, timeout=300)
            target = _step(state) + rng.randint(1, 4)
            wait_until(lambda target=target: _step(state) >= target, f"cut {target}", launcher, timeout=300)
            pids = [int((rank_root(state, rank) / "pid").read_text()) for rank in range(2)]
            os.kill(pids[rng.randrange(2)], signal.SIGKILL)
            killed.update(pids)
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    assert launcher.returncode == 0
    crashed = json.loads(out.strip().splitlines()[-1])
    assert crashed["restored_from"] is not None
    assert crashed["events"] == crashed["learned"] == straight["learned"] == straight["events"] == 30_000
    assert straight["rows"] > 0 and crashed["checkpoints"] == straight["checkpoints"], \
        (tmp_path / "crashed.stderr").read_text()[-6000:]
    models = [assemble(tmp_path / run).model.eval() for run in ("straight", "crashed")]
    for name, table in models[0].tables.items():
        a, b = table.state_dict(), models[1].tables[name].state_dict()
        order_a, order_b = np.argsort(a["ids"]), np.argsort(b["ids"])
        for key in ("ids", "rows", "counts", "last_seen", *(k for k in a if k.startswith("state."))):
            assert np.array_equal(a[key][order_a], b[key][order_b]), key
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)
    probe = _probe()
    with torch.no_grad():
        assert torch.equal(models[0](probe), models[1](probe))
    _serves_the_final_model(state), _serves_the_final_model(tmp_path / "straight")
    # each incarnation of the group began with a full snapshot (how many deltas came between is timed)
    assert len(ModelRegistry(state / "registry").full_versions()) == 3
    assert len(ModelRegistry(tmp_path / "straight" / "registry").full_versions()) == 1
    positions = _positions(state)
    assert len(positions) == len(set(positions)) == 30_000
    assert sorted(positions) == sorted(_positions(tmp_path / "straight"))


def _whole(state: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every row of the group's newest cut, sorted by id, with its optimizer state and sightings."""
    out: dict[str, list] = {}
    for rank_tables in _shards(state):
        for name, table in rank_tables.items():
            out.setdefault(name, []).append(table)
    merged = {}
    for name, parts in out.items():
        keys = ("ids", "rows", "counts", "last_seen", *(k for k in parts[0] if k.startswith("state.")))
        whole = {key: np.concatenate([p[key] for p in parts]) for key in keys}
        order = np.argsort(whole["ids"])
        merged[name] = {key: value[order] for key, value in whole.items()}
    return merged


def test_two_three_two_workers_keep_every_row_and_its_optimizer_state(tmp_path: Path) -> None:
    need_real_data("movielens-100k")
    state = tmp_path / "state"
    args = ("--batch-window", "off", "--checkpoint-events", "10000")
    plan = [(2, 20_000), (3, 20_000), (3, 40_000), (2, 40_000), (2, 60_000)]
    before = None
    for workers, limit in plan:
        figures = _run(_command(state, workers, "--limit", str(limit), *args))
        assert figures["events"] == limit and figures["workers"] == workers
        rows = _whole(state)
        if before is not None and before[0] == limit:       # a restart with no new events: only moved
            for name, table in before[1].items():
                for key, value in table.items():
                    assert np.array_equal(rows[name][key], value), (workers, name, key)
        for rank, shard in enumerate(_shards(state)):
            for table in shard.values():
                assert bool((owners(table["ids"], workers) == rank).all())
        before = (limit, rows)
    positions = _positions(state)
    assert len(positions) == len(set(positions)) == 60_000


def test_the_readmes_torchrun_command_runs_a_group(tmp_path: Path) -> None:
    """The README's multi-machine command, on one machine (one node of 2 workers, 127.0.0.1)."""
    need_real_data("movielens-100k")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text().replace("\\\n", " ")
    line = next(line for line in readme.splitlines() if line.startswith("torchrun --nnodes"))
    port = free_port()
    args = (line.replace("--nnodes 2:4", "--nnodes 1").replace("HOST:29400", f"127.0.0.1:{port}")
            .replace("/shared/group", str(tmp_path / "group")).split()[1:])
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args, "--limit", "5000", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "group" / "figures.json").read_text())
    assert figures["workers"] == 2 and figures["events"] == figures["learned"] == 5000
