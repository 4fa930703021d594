"""`freshrec serve --retrieval`: /recommend retrieves from the two-tower's index in every worker, and the
index follows the model's new versions while serving; `--items`: every worker scores a model with content
features from the items' text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from conftest import TwoTowerTrainer, free_port, terminate, wait_until

from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.features.content import item_content, read_items
from freshrec.models import build_model
from freshrec.snapshot import ModelRegistry, Snapshot

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # server processes, waited on
FRESHREC = [sys.executable, "-m", "freshrec.cli"]


def _retrieval(url: str) -> dict:
    try:
        return httpx.get(f"{url}/model").json().get("retrieval") or {}
    except httpx.HTTPError:
        return {}


def _recommended(url: str, user, answers: list) -> bool:
    """POST /recommend for `user` (k 5) on a new connection; the answer appended to `answers`; whether it is a 200."""
    answers.append(httpx.post(f"{url}/recommend", json={"user": user, "k": 5}))
    return answers[-1].status_code == 200


def test_workers_retrieve_and_follow_the_two_towers_versions(trained, tmp_path: Path) -> None:
    two = TwoTowerTrainer(tmp_path / "retrieval", trained.publisher.fields)
    for chunk in trained.chunks[:2]:
        trained.learn(chunk)
        two.learn(chunk)
    port = free_port()
    command = ["serve", "--registry", str(trained.registry.root), "--retrieval", str(two.registry.root),
               "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(FRESHREC + command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _retrieval(url).get("items", 0) > 0, "the retrieval index", process)
        user = trained.chunks[0].column("user_id")[0].as_py()
        answers: list[httpx.Response] = []
        for _ in range(10):   # new connections: whichever worker takes them answers (once it loaded its models)
            wait_until(lambda: _recommended(url, user, answers), "a 200 from /recommend", process)
            assert len(answers[-1].json()["items"]) == 5
        two.learn(trained.chunks[2])
        newer = two.registry.latest()   # each worker indexes it in turn; a poll reaches one of them
        wait_until(lambda: (_retrieval(url).get("version") or 0) >= newer, "the new two-tower version indexed", process)
    finally:
        out, _ = terminate(process)
    assert process.returncode == 0, out


def test_a_text_model_needs_items_and_items_need_their_columns(trained, tmp_path: Path) -> None:
    done = subprocess.run(FRESHREC + ["serve", "--registry", str(tmp_path), "--text-model", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "give --items" in done.stderr
    (tmp_path / "items.csv").write_text("item_id,title\n1,a\n")
    done = subprocess.run(FRESHREC + ["serve", "--registry", str(tmp_path), "--items", str(tmp_path / "items.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--items" in done.stderr and "'text'" in done.stderr


def test_workers_score_a_content_model_from_the_items_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_CACHE", str(tmp_path / "cache"))   # the server reads the vectors encoded here
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\n1,a space adventure among the stars\n2,a quiet kitchen drama\n")
    content = item_content(read_items(items))
    specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL),
             *content.specs()]
    model = build_model("fm", specs)
    with torch.no_grad():   # scores follow the likeness to item 1's text
        model.dense.weight.copy_(torch.from_numpy(content.vectors([1])) * 4)
    registry = ModelRegistry(tmp_path / "registry")
    registry.publish(Snapshot(model, version=1))
    port = free_port()
    process = subprocess.Popen(FRESHREC + ["serve", "--registry", str(registry.root), "--items", str(items),
                                           "--port", str(port), "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        answers: list[httpx.Response] = []
        for _ in range(6):   # new connections: whichever worker takes them answers
            wait_until(lambda: _predicted(url, answers), "a 200 from /predict", process)
            scores = answers[-1].json()["scores"]
            assert scores[0] > scores[1] > 0.5 == scores[2]   # item 3 has no text: a zero vector
    finally:
        out, _ = terminate(process)
    assert process.returncode == 0, out


def _predicted(url: str, answers: list) -> bool:
    """POST /predict on a new connection; the answer appended to `answers`; whether it is a 200 (False: not
    listening yet)."""
    try:
        answers.append(httpx.post(f"{url}/predict", json={"user": "u", "candidates": [1, 2, 3]}))
    except httpx.HTTPError:
        return False
    return answers[-1].status_code == 200
