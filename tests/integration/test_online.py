"""Online training on the real data sets: prequential AUC (each batch scored before it is learned,
one pass in time order) against the issue's reference learners, and `freshrec replay --model`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import need_real_data

from freshrec.engine.online import train_online
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics import auc, logloss
from freshrec.models import DeepFMConfig, FMConfig, LRConfig, OnlineFM, build_model
from freshrec.models.fm_fast import FastFM
from freshrec.train import OnlineTrainer, TrainerConfig

pytestmark = pytest.mark.integration
CRITEO = "criteo-kaggle-dac-head/criteo_train_head10000.txt"


def _prequential(fmt: str, path: Path, name: str, config, trainer: TrainerConfig, batch_size: int) -> dict:
    source = open_source(fmt, path, MemoryDeadLetters())
    specs = default_specs(source.fields, dim=config.dim)
    online = OnlineTrainer(build_model(name, specs, config), trainer)
    return train_online(source, FeaturePipeline(specs), online, batch_size=batch_size)


def test_movielens_100k_deepfm_prequential_auc() -> None:
    """user, item, genres, age, sex, occupation and zip3 (every field of the reader), label rating>=4.

    Measured 0.752 (logloss 0.583) at batch 16; 0.7615 at batch 4 (too slow for this test). The
    issue's target, 0.77, is NOT reached: the assertion holds the measured level with a margin.
    References on the same stream: VW --ftrl 0.760, VW LR 0.753, River LR 0.741."""
    figures = _prequential("movielens-100k", need_real_data("movielens-100k"), "deepfm",
                           DeepFMConfig(dim=16, lr=0.05, hidden=(64, 32)), TrainerConfig(), batch_size=16)
    assert figures["rows"] == 100_000 and figures["skipped_batches"] == 0
    assert figures["auc"] >= 0.745, figures
    assert figures["logloss"] < 0.59, figures


def test_movielens_100k_fast_fm_one_event_at_a_time() -> None:
    """The fused FM path learning event by event (batch 1), a higher learning rate on the linear
    column. Measured AUC 0.7682, logloss 0.5717: above VW --ftrl (0.760), below the issue's 0.77."""
    source = open_source("movielens-100k", need_real_data("movielens-100k"), MemoryDeadLetters())
    specs = default_specs(source.fields, dim=16)
    model = OnlineFM(specs, FMConfig(dim=16, lr=0.08, linear_lr=0.3, initial_accumulator=0.01))
    fast = FastFM(model, torch.optim.Adagrad([model.dense_weight, model.bias], lr=0.08))
    pipeline, probs, labels = FeaturePipeline(specs), [], []
    for chunk in source:
        for batch in pipeline.build(chunk).split(1):
            probs.append(fast.learn(batch))
            labels.append(batch.labels)
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    assert len(probs) == 100_000 and fast.skipped == 0
    assert auc(probs, labels) >= 0.765
    assert logloss(probs, labels) < 0.575


def test_criteo_head_lr_prequential_auc() -> None:
    """13 dense (signed log1p) + 26 categorical, file order. Measured AUC 0.7229, logloss 0.4689
    (references: VW LR 0.720, River LR 0.709, plain PyTorch DeepFM 0.662)."""
    figures = _prequential("criteo", need_real_data(CRITEO), "lr", LRConfig(lr=0.05),
                           TrainerConfig(dense_lr=0.02), batch_size=32)
    assert figures["rows"] == 10_000 and figures["skipped_batches"] == 0
    assert figures["auc"] >= 0.715, figures


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "freshrec.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_replay_model_json(tmp_path: Path) -> None:
    path = need_real_data(CRITEO)
    done = _run(["replay", "--format", "criteo", "--data", str(path), "--limit", "3000", "--model", "fm",
                 "--dim", "8", "--lr", "0.05", "--batch-size", "256", "--seed", "1", "--json", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("rows", "seconds", "rows_per_s", "auc", "logloss", "auc_last20", "dead_letters", "live_ids",
                "ne", "calibration", "skipped_batches", "model"):
        assert key in figures, key
    assert figures["rows"] == 3_000 and figures["model"] == "OnlineFM" and figures["dry_run"] is False
    assert 0.5 < figures["auc"] < 1.0 and figures["live_ids"] > 1_000
    dry = _run(["replay", "--format", "criteo", "--data", str(path), "--limit", "1000", "--model", "fm",
                "--dry-run", "--json", "--quiet"], tmp_path)
    figures = json.loads(dry.stdout.strip().splitlines()[-1])
    assert dry.returncode == 0 and figures["dry_run"] is True and "auc" not in figures


@pytest.mark.parametrize("args, message", [
    (["--model", "svm"], "error: unknown model 'svm'; choose one of: lr, fm, deepfm, dcn"),
    (["--model", "fm", "--dim", "0"], "error: --dim and --lr must be positive"),
    (["--model", "lr", "--lr", "-1"], "error: --dim and --lr must be positive"),
])
def test_bad_model_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = _run(["replay", "--format", "simulator", "--limit", "10", *args], tmp_path)
    assert done.returncode == 2 and done.stderr == message + "\n", done.stderr
