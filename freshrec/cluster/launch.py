"""`freshrec run --workers N`: the worker group on this machine, launched by torchrun.

The launcher writes the run's whole configuration to `STATE/group-config.yaml` (serving off: the
ranks publish their parts of each version to `STATE/registry`, the launcher serves them) and starts
`python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts R -m freshrec.cli run
--config STATE/group-config.yaml --state STATE`: torchrun's elastic agent starts the N ranks
(`freshrec.cluster.worker`), and when one dies it stops the others and starts the group again, up
to R times; the group continues from its last committed cut. Across machines, run the same
`freshrec run` under your own `torchrun --nnodes MIN:MAX --rdzv-backend c10d --rdzv-endpoint HOST:PORT`
on each machine, with a `--state` every machine can reach, and `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`
in its environment (see `Group.join`). `freshrec autoscale` starts such agents on this machine
(`agent_command`), one per worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from freshrec.cluster.worker import FIGURES
from freshrec.config import FreshrecConfig

__all__ = ["AGENT_ENV", "agent_command", "group_config", "group_figures", "launch_command", "launch_group"]

AGENT_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
"""What each agent of an elastic group needs in its environment (see `Group.join`)."""


def launch_command(config_path: Path, state: Path, workers: int, max_restarts: int) -> list[str]:
    """The torchrun command line that runs the group (see the module docstring).

    >>> launch_command(Path("s/group-config.yaml"), Path("s"), 2, 3)[2:6]
    ['torch.distributed.run', '--standalone', '--nproc-per-node=2', '--max-restarts=3']
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.5",
            "-m", "freshrec.cli", "run", "--config", str(config_path), "--state", str(state), "--quiet"]


def agent_command(config_path: Path, state: Path, nodes: tuple[int, int], endpoint: str, run_id: str,
                  max_restarts: int) -> list[str]:
    """One torchrun agent of an elastic group (one rank each): `nodes` = (fewest, most) agents, the c10d
    rendezvous at `endpoint` (host:port) hosted by the caller, not by an agent (`is_host=false`), so that
    any agent may stop; a round closes 1 s after the fewest agents have joined.

    >>> agent_command(Path("s/group-config.yaml"), Path("s"), (1, 3), "127.0.0.1:29500", "g", 9)[3:8]
    ['--nnodes=1:3', '--nproc-per-node=1', '--rdzv-backend=c10d', '--rdzv-endpoint=127.0.0.1:29500', '--rdzv-id=g']
    """
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes[0]}:{nodes[1]}", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
            "--rdzv-conf=is_host=false,last_call_timeout=1", f"--max-restarts={max_restarts}", "--monitor-interval=0.5",
            "-m", "freshrec.cli", "run", "--config", str(config_path), "--state", str(state), "--quiet"]


def group_config(config: FreshrecConfig, state: Path) -> Path:
    """Write the ranks' configuration (the run's, serving off) to `STATE/group-config.yaml`; its path."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "group-config.yaml"
    ranks = config.model_copy(update={"serve": config.serve.model_copy(update={"enabled": False})})
    path.write_text(yaml.safe_dump(ranks.model_dump(mode="json"), sort_keys=False))
    (state / FIGURES).unlink(missing_ok=True)
    return path


def group_figures(state: Path) -> dict | None:
    """The group's figures, written by its rank 0 once the stream ended (None before)."""
    path = state / FIGURES
    return json.loads(path.read_text()) if path.exists() else None


def launch_group(config: FreshrecConfig, state: Path) -> dict:
    """Run the group to the end of the stream; its figures (rank 0's `STATE/figures.json`).
    RuntimeError when it failed more often than `training.max_restarts`."""
    path = group_config(config, state)
    t = config.training
    code = subprocess.call(launch_command(path, state, t.workers, t.max_restarts))
    figures = group_figures(state)
    if code != 0 or figures is None:
        raise RuntimeError(f"the worker group failed (torchrun exit {code}, {t.max_restarts} restarts allowed); "
                           "the workers' messages are above. A rerun continues from the last checkpoint")
    return figures
