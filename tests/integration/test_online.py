"""Online training on the real data sets: prequential AUC (each batch scored before it is learned,
one pass in time order) against the issue's reference learners, and `freshrec replay --model`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_real_data

from freshrec.engine import train_online
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import DeepFMConfig, FMConfig, LRConfig, OnlineFM, build_model
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


@pytest.mark.parametrize("ordinal, min_auc, max_logloss", [((), 0.765, 0.575), ((2, 3, 5), 0.768, 0.570)])
def test_movielens_100k_fm_one_event_at_a_time(ordinal: tuple, min_auc: float, max_logloss: float) -> None:
    """The FM (the trainer takes the fused step) learning event by event (batch 1) with a higher
    learning rate on the linear column. From the label alone: measured AUC 0.7682, logloss 0.5717,
    above VW --ftrl (0.760), below the issue's 0.77. Learning also the rating's other levels
    (P(rating >= 2, 3, 5) beside the label rating >= 4, `ordinal_levels`): AUC 0.7715, logloss
    0.5671 - the same events, with the rating each one carries."""
    source = open_source("movielens-100k", need_real_data("movielens-100k"), MemoryDeadLetters())
    specs = default_specs(source.fields, dim=16)
    config = FMConfig(dim=16, lr=0.08, linear_lr=0.3, initial_accumulator=0.01, ordinal_levels=ordinal)
    trainer = OnlineTrainer(OnlineFM(specs, config))
    figures = train_online(source, FeaturePipeline(specs, "rating" if ordinal else None), trainer, batch_size=1)
    assert trainer.fused and figures["rows"] == 100_000 and figures["skipped_batches"] == 0
    assert figures["auc"] >= min_auc, figures
    assert figures["auc"] > figures["baseline_auc"] + 0.05, figures   # items' running click rates: 0.694
    assert figures["logloss"] < max_logloss, figures


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
    assert "baseline_auc" not in figures   # Criteo's rows name no item: no item click rate to compare with
    dry = _run(["replay", "--format", "criteo", "--data", str(path), "--limit", "1000", "--model", "fm",
                "--dry-run", "--json", "--quiet"], tmp_path)
    figures = json.loads(dry.stdout.strip().splitlines()[-1])
    assert dry.returncode == 0 and figures["dry_run"] is True and "auc" not in figures


def test_replay_json_reports_the_item_click_rate_baseline_beside_the_model(tmp_path: Path) -> None:
    """The simulator's clicks depend on user and item: the FM must beat each item's running click
    rate, which is itself better than chance (measured 0.66 against 0.62 on 20,000 events)."""
    done = _run(["replay", "--format", "simulator", "--limit", "20000", "--model", "fm", "--json", "--quiet"],
                tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.55 < figures["baseline_auc"] < figures["auc"], figures
    assert figures["logloss"] < figures["baseline_logloss"], figures


def test_replay_by_default_learns_a_slow_stream_event_by_event(tmp_path: Path) -> None:
    """MovieLens is a slow stream (users rate in bursts within one second): by default a
    micro-batch ends at 1 ms of event time or a repeated user, so each event is learned before the
    next is scored; `--batch-window off` cuts by `--batch-size` (512) alone, and learns less."""
    args = ["replay", "--format", "movielens-100k", "--data", str(need_real_data("movielens-100k")),
            "--limit", "20000", "--model", "fm", "--json", "--quiet"]
    default = json.loads(_run(args, tmp_path).stdout.strip().splitlines()[-1])
    by_size = json.loads(_run([*args, "--batch-window", "off"], tmp_path).stdout.strip().splitlines()[-1])
    assert default["rows"] == by_size["rows"] == 20_000
    assert default["auc"] > by_size["auc"] + 0.02, (default["auc"], by_size["auc"])


def test_replay_learns_the_ratings_other_levels_from_the_cli(tmp_path: Path) -> None:
    path = need_real_data("movielens-100k")
    args = ["replay", "--format", "movielens-100k", "--data", str(path), "--limit", "20000", "--model", "fm",
            "--batch-size", "16", "--json", "--quiet"]
    plain = json.loads(_run(args, tmp_path).stdout.strip().splitlines()[-1])
    ordinal = json.loads(_run([*args, "--target", "rating", "--ordinal-levels", "2,3,5"], tmp_path)
                         .stdout.strip().splitlines()[-1])
    assert plain["rows"] == ordinal["rows"] == 20_000
    assert ordinal["auc"] > plain["auc"] + 0.003 and plain["auc"] > 0.7  # measured 0.7332 and 0.7280


@pytest.mark.parametrize("args, message", [
    (["--model", "svm"], "error: --model (model.name): expected one of 'lr', 'fm', 'deepfm' or 'dcn', got 'svm'"),
    (["--model", "fm", "--dim", "0"], "error: --dim (model.dim): expected a number >= 1, got 0"),
    (["--model", "lr", "--lr", "-1"], "error: --lr (model.lr): expected a number > 0.0, got -1.0"),
    (["--model", "fm", "--ordinal-levels", "2,5"],
     "error: --ordinal-levels (model.ordinal_levels): goes with features.target (the graded column), "
     "set both or neither"),
    (["--model", "fm", "--ordinal-levels", "2,x", "--target", "r"],
     "error: --ordinal-levels '2,x': expected numbers separated by commas, e.g. 2,3,5"),
    (["--model", "fm", "--ordinal-levels", "2,2", "--target", "r"],
     "error: --ordinal-levels (model.ordinal_levels): expected distinct levels, got [2.0, 2.0]"),
    (["--model", "fm", "--batch-window", "soon"],
     "error: --batch-window (training.online_batch_window): expected a non-negative duration like 30s, 5m, 6h, "
     "1d (units ms, s, m, h, d; a plain number is seconds), got 'soon'"),
])
def test_bad_model_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = _run(["replay", "--format", "simulator", "--limit", "10", *args], tmp_path)
    assert done.returncode == 2 and done.stderr == message + "\n", done.stderr
