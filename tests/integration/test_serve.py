"""Train and serve in one process, a server alone, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

pytestmark = pytest.mark.integration
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
SYNC_INTERVAL = 1.0


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(f"{url}/healthz").json()["status"] == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


def _stop(process: subprocess.Popen, sig: int) -> tuple[int, str]:
    """Signal `process` and collect its exit code and output; after 30 s it is killed, with its
    process group when it leads one (started with `start_new_session`: a supervisor's workers, which
    would otherwise hold its output pipe open for ever)."""
    process.send_signal(sig)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        out, _ = process.communicate(timeout=30)
    return process.returncode, out


@pytest.fixture
def train_and_serve(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    process = subprocess.Popen(
        FRESHREC + ["replay", "--format", "simulator", "--limit", "20000", "--model", "fm", "--dim", "8",
                    "--serve", "--registry", str(tmp_path / "registry"), "--port", str(port),
                    "--sync-interval", str(SYNC_INTERVAL), "--quiet", "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _learned(client: httpx.Client) -> int:
    """How many events the served model has learned."""
    return client.get("/model").json()["train_position"]["events_learned"]


def test_clicks_on_a_new_item_raise_its_served_score(train_and_serve) -> None:
    url, process = train_and_serve
    _wait_ready(url, process)
    with httpx.Client(base_url=url) as client:
        def score() -> float:
            return client.post("/predict", json={"user": "u1", "candidates": ["brand-new"]}).json()["scores"][0]

        wait_until(lambda: _learned(client) == 20_000, "the replay served")  # now only our clicks change it
        before = score()
        clicks = [{"user": f"u{n}", "item": "brand-new", "label": 1.0} for n in range(30)]
        assert client.post("/events", json={"events": clicks}).status_code == 202
        wait_until(lambda: _learned(client) == 20_030, "the clicks served")
        after = score()
        model = client.get("/model").json()
    assert after > before + 0.02, (before, after)
    assert model["freshness_s"]["n"] >= 1
    code, out = _stop(process, signal.SIGINT)
    assert code == 0, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["rows"] == 20_030 and figures["versions_published"]["delta"] >= 1


BAD_EVENTS = [({"label": -1}, "label"), ({"label": 0.5}, "label"), ({"label": 7}, "label"), ({"ts": 1e300}, "ts"),
              ({"ts": -1.0}, "ts"), ({"user": 1.5}, "user"), ({"item": ""}, "item_id"),
              ({"fields": {"price": "cheap"}}, "price"), ({"fields": {"colour": "red"}}, "colour")]


def test_bad_events_are_refused_and_the_trainer_and_server_go_on(train_and_serve) -> None:
    url, process = train_and_serve
    _wait_ready(url, process)
    good = {"user": "u1", "item": "i1", "label": 1}
    with httpx.Client(base_url=url) as client:
        for change, field in BAD_EVENTS:
            answer = client.post("/events", json={**good, **change})
            assert answer.status_code == 422 and field in answer.json()["detail"], (change, answer.text)
        assert client.post("/events", json=good).status_code == 202
        assert client.get("/healthz").json()["status"] == "ok" and process.poll() is None
    code, out = _stop(process, signal.SIGINT)
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["rows"] == 20_001      # the replay and the good event


def test_run_serves_and_learns_posted_events_after_the_stream_until_sigterm(tmp_path: Path) -> None:
    """`freshrec run` (what `make run` does) outlives its stream: it says what to try, keeps serving
    and learns the events posted to it, until SIGTERM; then it checkpoints and exits 0."""
    port = free_port()
    process = subprocess.Popen(
        FRESHREC + ["run", "--format", "simulator", "--limit", "3000", "--chunk", "1000", "--state",
                    str(tmp_path / "state"), "--port", str(port), "--quiet", "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        with httpx.Client(base_url=url) as client:
            wait_until(lambda: _learned(client) == 3_000, "the stream served")
            clicks = [{"user": f"u{n}", "item": "i1", "label": 1.0} for n in range(5)]
            assert client.post("/events", json={"events": clicks}).status_code == 202
            wait_until(lambda: _learned(client) == 3_005, "the posted events served")
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    for path in ("/predict", "/recommend", "/metrics"):
        assert f"curl -s {url}{path}" in errors, errors
    assert "the stream has ended; still serving" in errors
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["events"] == figures["learned"] == figures["logged"] == 3_005
    assert figures["stopped_by_signal"] and figures["served_version"] >= 1


def test_a_server_alone_follows_the_registry_and_stops_on_sigterm(tmp_path: Path) -> None:
    from freshrec.engine.sync import Publisher, SyncConfig
    from freshrec.events.simulator import Simulator, SimulatorConfig
    from freshrec.features import FeaturePipeline, default_specs
    from freshrec.models import build_model
    from freshrec.snapshot import ModelRegistry
    from freshrec.train import OnlineTrainer

    sim = Simulator(SimulatorConfig(batch_size=1000, total_events=3000))
    specs = default_specs(sim.fields, dim=4)
    trainer, pipeline = OnlineTrainer(build_model("lr", specs)), FeaturePipeline(specs)
    publisher = Publisher(ModelRegistry(tmp_path), trainer.model, sim.fields, SyncConfig(sync_interval=0.0))
    chunks = iter(sim)
    trainer.learn(pipeline.build(chunk := next(chunks)))
    publisher.observe(chunk)
    publisher.maybe_publish()
    port = free_port()
    process = subprocess.Popen(FRESHREC + ["serve", "--registry", str(tmp_path), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process)
        assert httpx.get(f"{url}/model").json()["version"] == 1
        for chunk in chunks:
            trainer.learn(pipeline.build(chunk))
            publisher.observe(chunk)
            publisher.maybe_publish()
        wait_until(lambda: httpx.get(f"{url}/model").json()["version"] == 3, "version 3 served")
        events = httpx.post(f"{url}/events", json={"user": "u", "item": "i"})
        assert events.status_code == 503 and "no event sink" in events.json()["detail"]
    finally:
        code, out = _stop(process, signal.SIGTERM)
    assert code == 0, out


def _workers(parent: int) -> set[int]:
    """The pids of the worker processes under `parent` (uvicorn's supervisor starts them with
    multiprocessing's spawn)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue   # gone meanwhile
        if ppid == parent and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def _serve_two_workers(trained) -> tuple[subprocess.Popen, int]:
    """`freshrec serve --workers 2` of a published model, in a session of its own (`_stop` kills the
    group), with its port; returned once both workers are up."""
    trained.trainer.learn(trained.pipeline.build(trained.chunks[0]))
    trained.publisher.observe(trained.chunks[0])
    trained.publisher.maybe_publish()
    port = free_port()
    command = ["serve", "--registry", str(trained.registry.root), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(FRESHREC + command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        wait_until(lambda: len(_workers(process.pid)) == 2, "two workers", process)
    except BaseException:
        _stop(process, signal.SIGKILL)
        raise
    return process, port


def test_serve_workers_share_the_port_and_a_dead_worker_is_replaced(trained) -> None:
    process, port = _serve_two_workers(trained)
    try:
        url = f"http://127.0.0.1:{port}"
        before = _workers(process.pid)
        assert "libtorch" in Path(f"/proc/{min(before)}/maps").read_text()   # a worker scores with torch;
        assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()   # the supervisor: none of it
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_workers(process.pid)) == 2 and victim not in _workers(process.pid),
                   "a new worker in place of the killed one", process)
        _wait_ready(url, process)
        for _ in range(20):   # new connections: whichever worker takes them answers
            answer = httpx.post(f"{url}/predict", json={"user": 1, "candidates": [1, 2, 3]})
            assert answer.status_code == 200 and len(answer.json()["scores"]) == 3
    finally:
        code, out = _stop(process, signal.SIGTERM)
    assert code == 0, out
    assert not _workers(process.pid)


def test_serve_workers_end_with_a_supervisor_killed_by_sigkill(trained) -> None:
    process, port = _serve_two_workers(trained)
    try:
        workers = _workers(process.pid)
        process.kill()   # the supervisor stops nothing: each worker ends on the kernel's signal
        process.wait()
        wait_until(lambda: not any(_serving(pid) for pid in workers), "the workers end with their supervisor")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)   # what is left of the group, if this failed
        process.communicate(timeout=30)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))   # the port is free again


def _serving(pid: int) -> bool:
    """`pid` is still running (not exited, not a zombie awaiting its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
