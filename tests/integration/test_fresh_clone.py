"""A fresh clone of the committed HEAD, in a temporary folder with no `../shared` beside it and no
`.venv`: the README's set-up (`make setup`) builds everything, `make run` works from the simulator
fallback (no data, no network), and the clone's own `freshrec` reads the real data. A fresh-clone
breakage cannot pass silently.

`make setup` builds a new .venv (a few minutes, once for the module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, need_real_data

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # mostly pip and make, waited on
REPO = Path(__file__).resolve().parents[2]
# what the user's shell would not have: this test run's make, data folder and imports
NOT_A_NEW_USERS = ("FRESHREC_DATA", "PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
# no network: any download fails at once (a proxy on the discard port refuses the connection)
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def _new_user_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in NOT_A_NEW_USERS}, **extra}


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`command` in its own process group, all of which is killed (by its pid) if it is still running
    at the end, timeout or not."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, errors = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, errors)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The committed HEAD cloned into a new folder (nothing beside it) and set up with `make setup`."""
    folder = tmp_path_factory.mktemp("fresh") / "freshrec"
    cloned = _run(["git", "clone", "-q", str(REPO), str(folder)], REPO.parent, _new_user_env(), timeout=300)
    assert cloned.returncode == 0, cloned.stderr
    assert not (folder.parent / "shared").exists()
    setup = _run(["make", "setup"], folder, _new_user_env(), timeout=1200)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    yield folder


def test_make_run_works_without_data_or_network(clone: Path, tmp_path: Path) -> None:
    port = free_port()
    env = _new_user_env(FRESHREC_CACHE=str(tmp_path / "cache"), **OFFLINE)
    done = _run(["make", "run", f"RUN_ARGS=--exit-at-end --limit 5000 --port {port} --quiet --json"], clone, env,
                timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "replaying the simulator instead" in done.stderr
    assert f"curl -s http://127.0.0.1:{port}/predict" in done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["format"] == "simulator" and figures["events"] == figures["learned"] == 5_000
    assert figures["served_version"] >= 1 and not figures["stopped_by_signal"]


def test_the_clones_freshrec_replays_the_real_data(clone: Path, tmp_path: Path) -> None:
    data = need_real_data("movielens-100k").parent
    env = _new_user_env(FRESHREC_DATA=str(data))
    done = _run([str(clone / ".venv/bin/freshrec"), "replay", "--format", "movielens-100k", "--model", "fm",
                 "--limit", "5000", "--json", "--quiet", "--dead-letters", str(tmp_path / "dead.jsonl")],
                tmp_path, env, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 5_000 and figures["format"] == "movielens-100k"
