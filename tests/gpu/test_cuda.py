"""On a CUDA device (skipped without one; run where a GPU is lent): rows on the device learn what
the host table learns, models learn on the device, AMP scores as fp32 does, the feed copies ahead,
`freshrec run --device cuda` runs the whole loop, and so does a worker group, each rank on its GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import movielens_batches

from freshrec.cluster import Group, GroupTrainer
from freshrec.embedding import FTRL, SGD, Adagrad, Adam, DynamicEmbedding, TableConfig
from freshrec.models import ModelConfig, build_model
from freshrec.testing.models import check_learn_keeps_its_batch, check_unseen_ids, stream
from freshrec.train import OnlineTrainer, TrainerConfig, Unit
from freshrec.train.staging import DeviceFeed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("optimizer", [SGD(lr=0.3), Adagrad(lr=0.2, initial_accumulator=0.1, first_column_lr=0.6),
                                       Adam(lr=0.05), FTRL(alpha=0.5, l1=0.05, l2=0.1)])
def test_rows_on_the_device_equal_the_host_table_after_the_same_stream(optimizer):
    tables = {device: DynamicEmbedding(TableConfig(dim=8, optimizer=optimizer, device=device, chunk_rows=1000))
              for device in ("cpu", "cuda")}
    rng = np.random.default_rng(0)
    for step in range(50):
        ids = rng.integers(1, 3000, 512)
        grads = torch.from_numpy(rng.normal(size=(512, 8)).astype(np.float32))
        for device, table in tables.items():
            table.apply_gradients(table.slots(ids, now=float(step)), grads.to(device), events=512)
    host, device = tables["cpu"].state_dict(), tables["cuda"].state_dict()
    assert host["ids"].tolist() == device["ids"].tolist() and tables["cuda"].storage.chunks > 1
    for key in host:
        if key.startswith(("rows", "state.")):
            np.testing.assert_allclose(device[key], host[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn"])
def test_a_model_learns_on_the_device_what_it_learns_on_the_host(name):
    data = stream(rows=4096, batch_size=256)
    trainers = {device: OnlineTrainer(build_model(name, data.specs, ModelConfig(dim=8)),
                                      TrainerConfig(device=device, fused=False))
                for device in ("cpu", "cuda")}
    for trainer in trainers.values():
        for _ in trainer.learn_stream([Unit.of(batch, len(batch)) for batch in data.batches]):
            pass
    host, gpu = trainers["cpu"], trainers["cuda"]
    assert gpu.model.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    assert all(t.storage.device.type == "cuda" for t in gpu.model.tables.values())
    np.testing.assert_allclose(gpu.predict(data.unseen).numpy(), host.predict(data.unseen).numpy(), atol=2e-3)
    for table, other in zip(gpu.model.tables.values(), host.model.tables.values()):
        np.testing.assert_allclose(table.state_dict()["rows"], other.state_dict()["rows"], atol=2e-3)
    assert abs(gpu.metrics.summary()["auc"] - host.metrics.summary()["auc"]) < 0.002


@pytest.mark.parametrize("check", [check_learn_keeps_its_batch, check_unseen_ids])
@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_model_checks_pass_on_the_device(check, name):
    check(name, TrainerConfig(device="cuda"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_on_the_device_is_within_0_002_auc_of_fp32(precision):
    specs, batches = movielens_batches()

    def auc(precision: str, seed: int) -> float:
        trainer = OnlineTrainer(build_model("deepfm", specs, ModelConfig(dim=8, seed=seed)),
                                TrainerConfig(device="cuda", precision=precision, seed=seed))
        for batch in batches:
            trainer.learn(batch)
        return trainer.metrics.summary()["auc"]

    fp32 = [auc("fp32", seed) for seed in (0, 1, 2)]
    low = [auc(precision, seed) for seed in (0, 1, 2)]
    assert abs(np.mean(low) - np.mean(fp32)) <= 0.002, (fp32, low)


def test_the_feed_copies_ahead_from_reused_buffers_and_keeps_ids_on_the_host():
    data = stream(rows=20_000, batch_size=512)
    feed = DeviceFeed("cuda")
    pairs = list(feed(data.batches))
    warm = feed.pool.allocations
    pairs += list(feed(data.batches))
    assert feed.pool.allocations == warm and feed.pool.pin
    for host, moved in pairs:
        assert moved.dense.is_cuda and moved.labels.is_cuda and moved.sparse.lengths().is_cuda
        assert not moved.sparse.values().is_cuda and moved.sparse.values() is host.sparse.values()
        assert torch.equal(moved.labels.cpu(), host.labels) and torch.equal(moved.dense.cpu(), host.dense)


def test_freshrec_run_learns_on_the_device(tmp_path):
    command = [sys.executable, "-m", "freshrec.cli", "run", "--device", "cuda", "--model", "deepfm",
               "--precision", "bf16", "--format", "movielens-100k", "--fallback", "simulator", "--limit", "20000",
               "--batch-window", "off",
               "--no-serve", "--exit-at-end", "--quiet", "--json", "--state", str(tmp_path / "state")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["events"] == 20_000 and "learning on cuda" in figures["gpu"], figures
    assert figures["auc"] > 0.6, figures


@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_a_rank_on_the_device_learns_what_it_learns_on_the_host(name):
    data = stream(rows=4096, batch_size=256)
    ranks = {device: GroupTrainer(build_model(name, data.specs, ModelConfig(dim=8, init_std=0.0)), TrainerConfig(),
                                  Group(0, 1, device)) for device in ("cpu", "cuda")}
    for trainer in ranks.values():
        for _ in trainer.learn_stream([Unit.of(batch, len(batch)) for batch in data.batches]):
            pass
    host, gpu = ranks["cpu"], ranks["cuda"]
    assert all(t.storage.device.type == "cuda" for t in gpu.model.tables.values())
    assert next(gpu.model.parameters()).is_cuda
    for table, other in zip(gpu.model.tables.values(), host.model.tables.values()):
        np.testing.assert_allclose(table.state_dict()["rows"], other.state_dict()["rows"], atol=2e-3)
    assert abs(gpu.group_figures()["auc"] - host.group_figures()["auc"]) < 0.002


def _group_run(tmp_path, launcher: list[str], flags: tuple[str, ...] = ()) -> dict:
    """The figures of `freshrec run` (under `launcher`, with `flags`) on GPUs, bf16, 20,000 events."""
    command = [*launcher, "-m", "freshrec.cli", "run", *flags, "--device", "cuda", "--precision", "bf16",
               "--format", "movielens-100k", "--fallback", "simulator", "--limit", "20000", "--batch-window", "off",
               "--offline-interval", "off", "--no-serve", "--quiet", "--json", "--state", str(tmp_path / "group")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "group" / "figures.json").read_text())


def test_a_group_of_one_under_torchrun_learns_on_the_gpu(tmp_path):
    figures = _group_run(tmp_path, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node=1"])
    assert figures["workers"] == 1 and figures["events"] == 20_000 and figures["auc"] > 0.6, figures


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (one per worker)")
def test_two_workers_learn_on_two_gpus_over_nccl(tmp_path):
    figures = _group_run(tmp_path, [sys.executable], ("--workers", "2"))
    assert figures["workers"] == 2 and figures["events"] == 20_000 and figures["auc"] > 0.6, figures
    assert figures["bytes_per_row_asked"] > 0, figures
