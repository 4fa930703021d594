"""`freshrec evaluate retrieval`: the README's command on MovieLens (shortened), and a missing text model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_real_data, readme_block_commands

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # CLI processes, waited on
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
README = "Retrieval and item content: `freshrec evaluate retrieval`"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRESHREC_CACHE": str(cwd / "cache")}
    return subprocess.run(FRESHREC + args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_readme_command_compares_the_retrievers(tmp_path: Path) -> None:
    need_real_data("movielens-100k")
    done = _run([*readme_block_commands(README)[0], "--limit", "3000"], tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["events"] == 3000 and figures["k"] == 50 and figures["content_dim"] == 384
    for name in ("two_tower_ids", "two_tower_content", "popular_cooc"):
        assert 0 < figures[name]["recall"] <= 1
    assert 0 < figures["cold_auc_content"] < 1 and 0 < figures["cold_auc_ids"] < 1
    assert len(list((tmp_path / "cache" / "content").rglob("*.safetensors"))) == 1   # the titles, encoded once


def test_a_missing_text_model_is_one_line_naming_it(tmp_path: Path) -> None:
    need_real_data("movielens-100k")
    done = _run(["evaluate", "retrieval", "--limit", "500", "--text-model", str(tmp_path / "nowhere")], tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"no sentence-transformers model at {tmp_path / 'nowhere'}" in done.stderr


def test_a_format_without_item_text_asks_for_items(tmp_path: Path) -> None:
    done = _run(["evaluate", "retrieval", "--format", "simulator", "--limit", "500"], tmp_path)
    assert done.returncode == 2 and "--items" in done.stderr and "--no-content" in done.stderr
    done = _run(["evaluate", "retrieval", "--format", "simulator", "--limit", "1000", "--no-content", "--json"],
                tmp_path)
    assert done.returncode == 0, done.stderr
    assert "two_tower_content" not in json.loads(done.stdout.strip().splitlines()[-1])
