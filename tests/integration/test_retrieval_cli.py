"""`freshrec evaluate retrieval`: the README's command on MovieLens (shortened), and a missing text model;
`freshrec run --retrieval`: the two-tower learned beside the ranking model and retrieved from by its server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import free_port, need_real_data, readme_block_commands, terminate, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # CLI processes, waited on
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
README = "Retrieval and item content: `freshrec evaluate retrieval`"
RUN_README = "Learning it in `freshrec run`"


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


def test_run_learns_the_two_tower_and_its_server_retrieves(tmp_path: Path) -> None:
    need_real_data("movielens-100k")
    port = free_port()
    env = {**os.environ, "FRESHREC_CACHE": str(tmp_path / "cache")}
    (tmp_path / "content.yaml").write_text("features: {content: true}\n")   # the ranking model reads titles too
    command = [*readme_block_commands(RUN_README)[0], "--config", str(tmp_path / "content.yaml"), "--limit", "6000",
               "--offline-interval", "off", "--port", str(port), "--state", str(tmp_path / "state"), "--quiet",
               "--json"]
    process = subprocess.Popen(FRESHREC + command,
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:   # the stream ends; the run goes on serving what it learned
        wait_until(lambda: _model(url).get("retrieval", {}).get("items", 0) > 0, "the retrieval index", process)
        answers: list[httpx.Response] = []
        wait_until(lambda: _recommended(url, answers), "a 200 from /recommend (the ranking model loaded)", process)
        assert len(answers[-1].json()["items"]) == 10
        never_seen = 1682   # in u.item, not among the first 6,000 ratings: scored from its title and genres
        scores = httpx.post(f"{url}/predict", json={"user": 1, "candidates": [1, never_seen, 99999]}).json()
        assert never_seen in scores["cold_items"] and 99999 in scores["cold_items"]
        assert scores["scores"][1] != scores["scores"][2]   # content moves a new item's score; no content: none
    finally:
        out, err = terminate(process)
    assert process.returncode == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["retrieval"]["rows"] == figures["learned"] == 6000 and figures["retrieval"]["items"] > 100
    assert figures["auc"] > 0.6
    assert (tmp_path / "state" / "retrieval-registry").is_dir()


def _recommended(url: str, answers: list) -> bool:
    answers.append(httpx.post(f"{url}/recommend", json={"user": 1, "k": 10}))
    return answers[-1].status_code == 200


def _model(url: str) -> dict:
    try:
        return httpx.get(f"{url}/model").json()
    except (httpx.HTTPError, ValueError):
        return {}
