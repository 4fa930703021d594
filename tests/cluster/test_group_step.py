"""Two ranks (gloo, spawned processes) learning their parts of each micro-batch take the step one
process takes on the whole micro-batch: the union of their shards and their dense weights equal the
single process's, with ranks that sit out a step (no rows of it) and units of unequal length. Where
a GPU is, also with both ranks' shards, batches and exchanges on it (gloo moves CUDA tensors; NCCL
would want a GPU per rank)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from freshrec.batch import Batch, SparseFeatures
from freshrec.cluster import Group, GroupTrainer, owners
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models import build_model
from freshrec.models.base import ModelConfig
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.online import Unit

pytestmark = pytest.mark.integration
SPECS = [FeatureSpec("user_id", FieldKind.CATEGORICAL, dim=4), FeatureSpec("item_id", FieldKind.CATEGORICAL, dim=4)]


def _batch(rows: np.ndarray) -> Batch:
    """Rows of (user, item, label) as a batch (ids offset so users and items differ)."""
    ids = torch.from_numpy(np.concatenate([rows[:, 0] + 1, rows[:, 1] + 1_000_000]).astype(np.int64))
    return Batch(SparseFeatures(["user_id", "item_id"], ids, torch.ones(2 * len(rows), dtype=torch.int32)),
                 dense=torch.zeros(len(rows), 0), labels=torch.from_numpy(rows[:, 2].astype(np.float32)),
                 ts=torch.arange(len(rows), dtype=torch.float64))


def _stream() -> list[list[np.ndarray]]:
    """Units of micro-batches of (user, item, label) rows."""
    rng = np.random.default_rng(3)
    rows = lambda n: np.stack([rng.integers(0, 40, n), rng.integers(0, 60, n), rng.integers(0, 2, n)], 1)  # noqa: E731
    return [[rows(50), rows(30), rows(20)], [rows(64)], [rows(10), rows(40)]]


def _part(rows: np.ndarray, rank: int, unit: int, batch: int) -> np.ndarray:
    """Rank `rank`'s rows of a micro-batch: by the user's owner; all on rank 0 in two micro-batches."""
    if (unit, batch) in ((0, 1), (2, 1)):
        return rows if rank == 0 else rows[:0]
    return rows[owners(rows[:, 0] + 1, 2) == rank]


def _model(name: str):
    return build_model(name, SPECS, ModelConfig(dim=4, init_std=0.0, lr=0.05))


def _rank(rank: int, port: int, name: str, out: str, device: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device == "cpu":
        group = Group.join(timeout_s=120)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=2)
        group = Group(rank, 2, device)
    trainer = GroupTrainer(_model(name), TrainerConfig(), group)
    units = []
    for u, unit in enumerate(_stream()):
        parts = [_part(rows, rank, u, b) for b, rows in enumerate(unit)]
        if rank == 1 and u == 2:
            parts = parts[:1]        # a unit with fewer micro-batches here (the last had no rows of it)
        units.append(Unit(_batch(np.concatenate(parts)), [len(p) for p in parts]))
    list(trainer.learn_stream(units))
    figures = trainer.group_figures()
    table = next(iter(trainer.model.tables.values())).state_dict()
    torch.save({"ids": table["ids"], "rows": table["rows"], "accum": table["state.accum"], "figures": figures,
                "dense": [p.detach().cpu() for p in trainer.model.parameters()]}, f"{out}/rank-{rank}.pt")
    group.leave()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
@pytest.mark.parametrize("name", ["fm", "lr"])
def test_two_ranks_take_the_step_one_process_takes(tmp_path: Path, name: str, device: str) -> None:
    mp.spawn(_rank, args=(_free_port(), name, str(tmp_path), device), nprocs=2)
    single = OnlineTrainer(_model(name), TrainerConfig(fused=False))
    for unit in _stream():
        for rows in unit:
            single.learn(_batch(rows))
    shards = [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=False) for rank in range(2)]
    ids = np.concatenate([s["ids"] for s in shards])
    rows = np.concatenate([s["rows"] for s in shards])
    accum = np.concatenate([s["accum"] for s in shards])
    table = next(iter(single.model.tables.values())).state_dict()
    assert sorted(ids.tolist()) == sorted(table["ids"].tolist())
    tol = 1e-6 if device == "cpu" else 1e-5      # a GPU's sums round otherwise
    mine, theirs = np.argsort(ids), np.argsort(table["ids"])
    np.testing.assert_allclose(rows[mine], table["rows"][theirs], atol=tol)
    np.testing.assert_allclose(accum[mine], table["state.accum"][theirs], rtol=10 * tol)
    for rank in range(2):
        for p, q in zip(shards[rank]["dense"], single.model.parameters()):
            torch.testing.assert_close(p, q.detach(), atol=tol, rtol=10 * tol)
    assert shards[0]["figures"]["scored_rows"] == single.metrics.summary()["rows"] == 214
    assert abs(shards[0]["figures"]["auc"] - single.metrics.summary()["auc"]) < 100 * tol
