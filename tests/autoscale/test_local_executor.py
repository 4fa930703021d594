"""`LocalExecutor` without starting torchrun (its agents are stand-in processes: `sleep`, or ones that exit
at once): the agent command and environment, one GPU per agent, the newest agent stopped first, what
`finished()` says when the agents are gone, a failed agent relaunching the group, and the group store's rule for several
agents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import freshrec.autoscale.local as local
from freshrec.autoscale.local import SCALE_DOWNS, LocalExecutor
from freshrec.cluster.group import _store
from freshrec.cluster.worker import FIGURES
from freshrec.config import FreshrecConfig

REAL_POPEN = subprocess.Popen   # the stand-ins below replace subprocess.Popen, which they start agents with


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict]]:
    """Each agent's command and environment; the agent itself is a process that waits to be stopped."""
    seen = []

    def popen(command, env, **kwargs):
        seen.append((command, env))
        return REAL_POPEN([sys.executable, "-c", "import time; time.sleep(600)"], **kwargs)

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    return seen


def test_agents_share_out_the_gpus_and_the_newest_stops_first(tmp_path: Path, started) -> None:
    executor = LocalExecutor(FreshrecConfig(), tmp_path, (1, 3), gpus=["0", "1", "2"], grace=30)
    try:
        executor.scale(2)
        assert executor.current() == 2 and [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "1"]
        command, env = started[0]
        assert "--nnodes=1:3" in command and f"--rdzv-endpoint={executor.endpoint}" in command
        assert f"--max-restarts={3 + SCALE_DOWNS}" in command and env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
        executor.scale(1)   # the agent on GPU 1 goes
        executor.scale(3)   # its GPU and the third go to the new agents
        assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "1", "1", "2"]
        with pytest.raises(ValueError, match="4 workers is outside the group's bounds 1..3"):
            executor.scale(4)
    finally:
        executor.close()
    assert executor.current() == 0


def test_more_workers_than_gpus_is_refused(tmp_path: Path, started) -> None:
    executor = LocalExecutor(FreshrecConfig(), tmp_path, (1, 3), gpus=["0"])
    try:
        with pytest.raises(ValueError, match="2 workers need 2 GPUs, this machine has 1"):
            executor.scale(2)
    finally:
        executor.close()


def exiting(monkeypatch: pytest.MonkeyPatch, codes: list[int]) -> list[list[str]]:
    """Agents that exit at once, with these codes in turn (then 0), printing a line each; returns the
    list each agent's command goes to."""
    exits, seen = iter(codes), []

    def popen(command, env, **kwargs):
        seen.append(command)
        return REAL_POPEN([sys.executable, "-c", f"print('the agent ends'); raise SystemExit({next(exits, 0)})"],
                          **kwargs)
    monkeypatch.setattr(local.subprocess, "Popen", popen)
    return seen


@pytest.mark.parametrize(("codes", "figures", "finished"), [
    ((0, 0), True, 0), ((0, 1), True, 0),    # an agent that joined as the group ended fails harmlessly
    ((0, 1), False, 1), ((0, 0), False, 1),  # the group ended without its figures: a failure
])
def test_finished_reads_the_groups_figures(tmp_path: Path, monkeypatch, codes, figures, finished) -> None:
    exiting(monkeypatch, list(codes))
    executor = LocalExecutor(FreshrecConfig(training={"max_restarts": 0}), tmp_path, (1, 2))
    try:
        executor.scale(2)
        for agent in executor._agents:
            agent.wait()
        if figures:
            (tmp_path / FIGURES).write_text("{}")
        assert executor.finished() == finished
        assert (executor.failure is None) == (finished == 0)
    finally:
        executor.close()


def test_a_failed_agent_relaunches_the_group_until_the_relaunches_are_spent(tmp_path: Path, monkeypatch) -> None:
    seen = exiting(monkeypatch, [3, 4, 5])
    executor = LocalExecutor(FreshrecConfig(training={"max_restarts": 2}), tmp_path, (1, 2))
    try:
        executor.scale(1)
        for relaunches in (1, 2):
            executor._agents[0].wait()
            assert executor.finished() is None and len(executor.relaunched) == relaunches
        executor._agents[0].wait()
        assert executor.finished() == 5 and len(executor.relaunched) == 2   # the third failure ends the group
    finally:
        executor.close()
    assert executor.relaunched == [tmp_path / "agents" / f"agent-{k}.log" for k in (1, 2)]
    assert executor.failure == f"{tmp_path / 'agents' / 'agent-3.log'} (exit 5) ends:\nthe agent ends"
    rounds = [next(arg for arg in command if arg.startswith("--rdzv-id=")) for command in seen]
    assert len(set(rounds)) == 3   # each launch of the group on a rendezvous of its own


def test_several_agents_sharing_torchruns_store_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        _store(0, 2, timeout=None)
