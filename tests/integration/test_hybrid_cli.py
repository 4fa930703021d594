"""The issue-7 commands end to end: `config check/show`, `run --config` with the article's block, and
`evaluate ab` with its report and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ARTICLE, need_real_data

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(FRESHREC + args, cwd=cwd, capture_output=True, text=True, timeout=1800)


def test_config_check_show_and_errors(tmp_path: Path) -> None:
    (tmp_path / "article.yaml").write_text(ARTICLE)
    assert _run(["config", "check", "article.yaml"], tmp_path).stdout.strip() == "article.yaml: ok"
    shown = _run(["config", "show", "article.yaml"], tmp_path).stdout
    assert "offline_interval: 6h" in shown and "count: 8" in shown
    (tmp_path / "shown.yaml").write_text(shown)
    assert _run(["config", "check", "shown.yaml"], tmp_path).returncode == 0      # show round-trips
    (tmp_path / "bad.yaml").write_text("training:\n  offline_interval: 6x\ngpu:\n  kind: A100\n")
    for command in (["config", "check", "bad.yaml"], ["run", "--config", "bad.yaml"]):
        done = _run(command, tmp_path)
        assert done.returncode == 2
        assert "training.offline_interval" in done.stderr and "'6x'" in done.stderr and "30s, 5m, 6h" in done.stderr
        assert "gpu.kind: unknown key 'kind' (allowed: type, count, device, precision, autoscale)" in done.stderr


def test_run_with_the_articles_block_retrains_offline(tmp_path: Path) -> None:
    data = need_real_data("movielens-100k")
    (tmp_path / "article.yaml").write_text(ARTICLE + f"source:\n  data: {data}\n")
    done = _run(["run", "--config", "article.yaml", "--state", "state", "--no-serve", "--limit", "20000",
                 "--json", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["learned"] == 20_000 and figures["retrains"] >= 2
    assert figures["offline"]["published"] >= 1
    assert (tmp_path / "state" / "offline-registry" / "full").is_dir()


def test_evaluate_ab_writes_the_report_and_json(tmp_path: Path) -> None:
    done = _run(["evaluate", "ab", "--format", "simulator", "--limit", "6000", "--day", "2s",
                 "--offline-interval", "1s", "--offline-window", "all", "--epochs", "1", "--dim", "4",
                 "--report", "report", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures["arms"]) == {"daily", "online", "hybrid"}
    assert all(arm["rows"] == 6000 and 0 < arm["auc"] < 1 for arm in figures["arms"].values())
    assert figures["arms"]["daily"]["retrains"] >= 1 and figures["arms"]["hybrid"]["retrains"] >= 1
    assert (tmp_path / "report" / "index.html").stat().st_size > 10_000
    bad = _run(["evaluate", "ab", "--format", "simulator", "--arms", "weekly"], tmp_path)
    assert bad.returncode == 2 and "unknown arm 'weekly'" in bad.stderr


@pytest.mark.beside   # one CLI run of two minutes, waited on
def test_movielens_online_beats_daily_and_hybrid_is_at_least_as_good(tmp_path: Path) -> None:
    """The issue's claim on MovieLens-100k in time order, with the default settings (measured:
    daily 0.6791, online 0.7680 learning event by event, hybrid 0.7676; deterministic on the CPU):
    the hybrid's fusion follows the better arm, within 0.001 of it (with micro-batches of 512, the
    online arm at 0.694, the hybrid was 0.0004 above it)."""
    data = need_real_data("movielens-100k")
    done = _run(["evaluate", "ab", "--data", str(data), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    arms = json.loads(done.stdout.strip().splitlines()[-1])["arms"]
    assert arms["online"]["auc"] > arms["daily"]["auc"]
    assert arms["hybrid"]["auc"] >= max(arms["online"]["auc"], arms["daily"]["auc"]) - 0.001
    assert all("cpu_seconds" in figures for figures in arms.values())   # a figure of the report, not a timing test
