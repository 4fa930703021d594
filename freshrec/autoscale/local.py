"""`LocalExecutor`: an elastic worker group on this machine, one torchrun agent per worker.

The executor hosts the group's c10d rendezvous store itself (a `TCPStore` on a free port), so any
agent may stop. Scaling up starts agents: the running ones see a node waiting, stop their workers
and the next rendezvous round takes the newcomers in. Scaling down stops the newest agents (SIGTERM,
then SIGKILL after `grace` seconds): the other ranks' collectives fail, their agents restart the
workers and the round closes with the agents left. Either way every rank starts again from the
group's last committed cut and reshards the tables to the new world size (`GroupEngine.restore`),
so nothing is lost or learned twice; the servers keep answering from the last published version.

torchrun counts a peer's exit as a failure of the remaining agents' workers, so each scale-down
spends one restart of every remaining agent: the agents are given `training.max_restarts` plus
`SCALE_DOWNS` restarts. An agent that fails before the group has ended its stream has closed the
rendezvous behind it (torchrun's rule), so the executor relaunches the whole group, as many agents on a
new rendezvous round, up to `training.max_restarts` times in all: as for any restart, it goes on from
its last cut. Each agent's output (torchrun's at `LOGLEVEL`, INFO unless set) goes to
`STATE/agents/agent-<k>.log`.

>>> import tempfile
>>> executor = LocalExecutor(FreshrecConfig(), Path(tempfile.mkdtemp()), (1, 3))
>>> executor.current(), executor.finished(), executor.config_path.name
(0, None, 'group-config.yaml')
>>> executor.scale(4)
Traceback (most recent call last):
...
ValueError: 4 workers is outside the group's bounds 1..3
>>> executor.close()
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from freshrec.cluster.launch import AGENT_ENV, agent_command, group_config, group_figures
from freshrec.config import FreshrecConfig

__all__ = ["SCALE_DOWNS", "LocalExecutor"]

log = logging.getLogger(__name__)

SCALE_DOWNS = 1000
"""Scale-downs an agent may live through (each costs it one torchrun restart)."""
FAILURE_LINES = 30
"""Lines of a failed agent's output that `failure` quotes."""


class LocalExecutor:
    """The group's agents (`current()` of them running) and its rendezvous store."""

    def __init__(self, config: FreshrecConfig, state: Path, bounds: tuple[int, int], host: str = "127.0.0.1",
                 grace: float = 60.0, gpus: Sequence[str] = ()) -> None:
        """Prepare the group (its configuration under `state`) and host its rendezvous; no agent runs yet.
        `gpus`: the GPUs (CUDA indices) the agents share out, one each (its `CUDA_VISIBLE_DEVICES`);
        empty: the workers learn on the CPU."""
        import torch.distributed as dist

        self.state, self.bounds, self.grace = Path(state), bounds, grace
        self.config_path = group_config(config, self.state)
        self._store = dist.TCPStore(host, 0, is_master=True, multi_tenant=True, wait_for_workers=False,
                                    timeout=datetime.timedelta(seconds=60))   # port 0: one the system picks
        self.port = self._store.port
        self.endpoint, self.group_id = f"{host}:{self.port}", f"freshrec-{os.getpid()}-{self.port}"
        self.restarts = config.training.max_restarts + SCALE_DOWNS
        self.relaunches = config.training.max_restarts   # the group relaunched after an agent failed, at most
        self.relaunched: list[Path] = []   # the output of each agent whose failure relaunched the group
        self.logs = self.state / "agents"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._agents: list[subprocess.Popen] = []
        self._started, self.gpus = 0, tuple(gpus)
        self._gpu_of: dict[int, str] = {}   # agent pid -> its GPU
        self._log_of: dict[int, Path] = {}  # agent pid -> its output
        self.failure: str | None = None     # once the group failed: which agent, and its last lines

    def current(self) -> int:
        """Agents running (each runs one worker)."""
        return sum(agent.poll() is None for agent in self._agents)

    def scale(self, workers: int) -> None:
        """Start or stop agents until `workers` run (the newest stop first)."""
        if not self.bounds[0] <= workers <= self.bounds[1]:
            raise ValueError(f"{workers} workers is outside the group's bounds {self.bounds[0]}..{self.bounds[1]}")
        self._agents = [agent for agent in self._agents if agent.poll() is None]
        if self.gpus and workers > len(self.gpus):
            raise ValueError(f"{workers} workers need {workers} GPUs, this machine has {len(self.gpus)}")
        while len(self._agents) < workers:
            self._start()
        while len(self._agents) > workers:
            self._stop(self._agents.pop())

    def finished(self) -> int | None:
        """None while the group runs. Once every agent has exited, 0 when the group ended its stream
        (rank 0 wrote its figures: an agent that joined as it ended finds the rendezvous closed and
        fails, harmlessly), else a failing exit code (`failure` says which agent, with its last lines).
        An agent that fails before the end relaunches the group while `relaunches` last."""
        if not self._agents:
            return None
        if group_figures(self.state) is not None:
            return None if self.current() else 0
        if failed := next((agent for agent in self._agents if agent.poll()), None):   # before the group's end
            if len(self.relaunched) >= self.relaunches:
                return self._failed(failed, failed.returncode)
            self.relaunched.append(self._log_of[failed.pid])
            log.warning("agent %s failed (exit %s): the group is relaunched from its last cut (%d of %d)",
                        self._log_of[failed.pid], failed.returncode, len(self.relaunched), self.relaunches)
            size = len(self._agents)
            self._stop_all()
            self.scale(size)
            return None
        if self.current() == 0:   # every agent exited without error, and without the group's figures
            return self._failed(self._agents[-1], 1)
        return None

    def _failed(self, agent: subprocess.Popen, code: int) -> int:
        path = self._log_of[agent.pid]
        lines = path.read_text(errors="replace").splitlines()[-FAILURE_LINES:]
        self.failure = f"{path} (exit {agent.returncode}) ends:\n" + "\n".join(lines)
        return code

    def close(self) -> None:
        """Stop every agent and the rendezvous store."""
        self._stop_all()
        self._store = None

    def _stop_all(self) -> None:
        while self._agents:
            self._stop(self._agents.pop())

    def _start(self) -> None:
        self._started += 1
        run_id = f"{self.group_id}-{len(self.relaunched)}"   # a new rendezvous for each launch of the group
        command = agent_command(self.config_path, self.state, self.bounds, self.endpoint, run_id, self.restarts)
        env = {"LOGLEVEL": "INFO", **os.environ, **AGENT_ENV}
        taken = {self._gpu_of.get(agent.pid) for agent in self._agents}
        gpu = next((g for g in self.gpus if g not in taken), None)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        path = self.logs / f"agent-{self._started}.log"
        with open(path, "ab") as output:
            agent = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._agents.append(agent)
        self._log_of[agent.pid] = path
        if gpu is not None:
            self._gpu_of[agent.pid] = gpu

    def _stop(self, agent: subprocess.Popen) -> None:
        """SIGTERM (torchrun stops its worker and leaves), SIGKILL to the agent's session after `grace` s."""
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
