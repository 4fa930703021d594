"""The README's deployment as written: `freshrec federated --deploy`, a SuperLink, two SuperNodes and
`flwr run`, on free ports (one round of a shorter stream); the server's result file holds both AUCs,
and every process is stopped by its group at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, need_real_data, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.beside]
README = Path(__file__).resolve().parents[2] / "README.md"
BIN = str(Path(sys.executable).parent) + "/"


def block(title: str) -> list[str]:
    """The lines of the first sh block under the README heading `title`."""
    found = re.search(rf"#+ {re.escape(title)}\n\n```sh\n(.*?)```", README.read_text(), re.S)
    assert found is not None, f"no sh block under {title!r}"
    return found.group(1).strip().splitlines()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(group: int) -> None:
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        os.waitpid(group, 0)
    except ChildProcessError:
        pass
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_readme_deployment_trains_on_a_superlink_and_two_supernodes(tmp_path):
    need_real_data("movielens-100k")
    ports = {"8000": str(free_port()), "9094": str(free_port()), "9095": str(free_port())}
    env = {**os.environ, "PWD": str(tmp_path)}
    background: list[subprocess.Popen] = []
    try:
        for line in block("Deployed: a SuperLink and SuperNodes"):
            line = line.replace(".venv/bin/", BIN)
            for default, port in ports.items():
                line = line.replace(f"--port {default}", f"--port {port}").replace(f":{default}", f":{port}")
            if line.startswith("export "):
                for assignment in line.removeprefix("export ").split():
                    name, value = assignment.split("=", 1)
                    value = value.replace("$PWD/.venv/bin", BIN.rstrip("/")).replace("$PATH", env["PATH"])
                    env[name] = value.replace("$PWD", str(tmp_path))
                continue
            if "--deploy" in line:
                line += f" --limit 20000 --rounds 1 --superlink 127.0.0.1:{ports['8000']}"
            if line.endswith("&"):
                background.append(subprocess.Popen(["bash", "-c", line.removesuffix("&")], cwd=tmp_path, env=env,
                                                   start_new_session=True, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
                continue
            if " run " in line:   # flwr run: once the SuperLink answers
                wait_until(lambda: listening(int(ports["8000"])), "the SuperLink listening", background[0])
            ran = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=900)
            assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    finally:
        for process in background:
            stop(process.pid)
    result = json.loads((tmp_path / "ml-federation" / "plan" / "result.json").read_text())
    assert [r["answered"] for r in result["rounds"]] == [2]
    assert result["federated"]["rows"] == result["central"]["rows"] == 4000
    assert result["federated"]["auc"] > 0.6 and result["central"]["auc"] > 0.6
