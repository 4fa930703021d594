"""`freshrec serve --retrieval`: /recommend retrieves from the two-tower's index in every worker, and the
index follows the model's new versions while serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import TwoTowerTrainer, free_port, terminate, wait_until

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
