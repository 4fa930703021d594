"""`freshrec run --workers N`: the worker group on this machine, launched by torchrun.

The launcher writes the run's whole configuration to `STATE/group-config.yaml` (serving off: the
ranks publish their parts of each version to `STATE/registry`, the launcher serves them) and starts
`python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts R -m freshrec.cli run
--config STATE/group-config.yaml --state STATE`: torchrun's elastic agent starts the N ranks
(`freshrec.cluster.worker`), and when one dies it stops the others and starts the group again, up
to R times; the group continues from its last committed cut. Across machines, run the same
`freshrec run` under your own `torchrun --nnodes MIN:MAX --rdzv-backend c10d --rdzv-endpoint HOST:PORT`
on each machine, with a `--state` every machine can reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from freshrec.cluster.worker import FIGURES
from freshrec.config import FreshrecConfig

__all__ = ["launch_command", "launch_group"]


def launch_command(config_path: Path, state: Path, workers: int, max_restarts: int) -> list[str]:
    """The torchrun command line that runs the group (see the module docstring).

    >>> launch_command(Path("s/group-config.yaml"), Path("s"), 2, 3)[2:6]
    ['torch.distributed.run', '--standalone', '--nproc-per-node=2', '--max-restarts=3']
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.5",
            "-m", "freshrec.cli", "run", "--config", str(config_path), "--state", str(state), "--quiet"]


def launch_group(config: FreshrecConfig, state: Path) -> dict:
    """Run the group to the end of the stream; its figures (rank 0's `STATE/figures.json`).
    RuntimeError when it failed more often than `training.max_restarts`."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "group-config.yaml"
    ranks = config.model_copy(update={"serve": config.serve.model_copy(update={"enabled": False})})
    path.write_text(yaml.safe_dump(ranks.model_dump(mode="json"), sort_keys=False))
    (state / FIGURES).unlink(missing_ok=True)
    t = config.training
    code = subprocess.call(launch_command(path, state, t.workers, t.max_restarts))
    if code != 0 or not (state / FIGURES).exists():
        raise RuntimeError(f"the worker group failed (torchrun exit {code}, {t.max_restarts} restarts allowed); "
                           "the workers' messages are above. A rerun continues from the last checkpoint")
    return json.loads((state / FIGURES).read_text())
