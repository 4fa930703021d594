"""`FederatedTrainer`: a recommender trained by clients that keep their users' events, on Flower.

The stream's users are split into `clients` disjoint groups (a stable hash of the user id), each
group's events written where its client reads them. The stream's event time is cut into `rounds`
windows of equal numbers of events; in round r the sampled clients learn their events up to the end
of window r with freshrec's online trainer and the server combines their updates of the shared arrays
with SecAgg+ (`freshrec.federated.server`), so that it never sees one client's update. `run` has
Flower's simulation engine run the clients, several at a time, on this machine; `deploy` writes a
Flower App and the clients' event files for Flower's deployment engine (a SuperLink and SuperNodes).

The figure to compare is prequential: every event is scored by its client's model before that model
learns it, and the scores of the last `holdout` of the stream (time order) are summed, securely, into
one histogram; central online training (`freshrec.automl.objective.prequential`, the product's loop
on the whole stream) is scored on the same events in the same way (`freshrec.federated.plan`). With
`noise`, the updates are clipped and noised (differential privacy at the level of a client's whole
update) and the privacy budget spent is reported.

>>> from freshrec.config import parse_config
>>> trainer = FederatedTrainer(parse_config({"model": {"name": "fm", "dim": 4}}), FederatedConfig(clients=2))
>>> trainer.config.rounds, trainer.settings.fusion.strategy          # online learning, no offline fusion
(30, 'none')
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from flwr.simulation import run_simulation

from freshrec._hashing import field_salt, hash_values
from freshrec.automl.stream import Stream
from freshrec.config import FreshrecConfig, with_overrides
from freshrec.federated.client import DROPPED_OUT, client_app
from freshrec.federated.config import FederatedConfig, FederatedResult
from freshrec.federated.plan import Plan
from freshrec.federated.server import RoundRecord, server_app

__all__ = ["FederatedTrainer", "split_by_user"]

APP_COMPONENTS = {"serverapp": "freshrec.federated.deploy:server", "clientapp": "freshrec.federated.deploy:client"}


class FederatedTrainer:
    """Federated training of `settings`' model (see the module docstring) as `config` says."""

    def __init__(self, settings: FreshrecConfig, config: FederatedConfig | None = None) -> None:
        self.settings = with_overrides(settings, {"fusion.strategy": "none"})   # online learning only
        self.config = config or FederatedConfig()

    def run(self, stream: Stream, audit: Path | None = None, progress: Callable[[RoundRecord], None] | None = None,
            workdir: Path | None = None) -> FederatedResult:
        """Train on `stream` (in time order) in Flower's simulation and compare with central online
        training on it; with `audit`, write what each client produced and sent and what the server
        recovered there; `progress` gets each round's record as it ends."""
        c = self.config
        plan = Plan.make(self.settings, c, stream)
        if audit is not None:
            audit.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="freshrec-federated-", dir=workdir) as scratch:
            split_by_user(stream, c.clients, Path(scratch))
            strategy = plan.strategy(audit, progress)
            _quiet_flower(c.dropout > 0)
            run_simulation(server_app(strategy, plan.workflow()),
                           client_app(plan.setup(audit), Path(scratch), c.dropout, c.seed), num_supernodes=c.clients,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": c.workers or os.cpu_count() or 1,
                                                         "log_to_driver": False, "include_dashboard": False,
                                                         "_temp_dir": str(Path(scratch) / "ray")}})
        return plan.result(strategy.finish())

    def deploy(self, stream: Stream, folder: Path, superlink: str = "127.0.0.1:8000") -> Path:
        """Write a Flower App into `folder` for Flower's deployment engine: `app/pyproject.toml` (its
        components `freshrec.federated.deploy:server` and `:client`), the plan (`plan/`), each client's
        events (`clients/<k>.arrow`, to be placed on its device) and a Flower configuration naming the
        SuperLink at `superlink` "freshrec" (`flwr-home/config.toml`, insecure). `FLWR_HOME=FOLDER/flwr-home
        flwr run FOLDER/app freshrec` then runs the rounds on that SuperLink, whose SuperNodes each name their
        events file in their node config (`data="..."`); the server writes `result.json` into the plan.
        Returns `folder`."""
        folder = folder.resolve()
        (folder / "flwr-home").mkdir(parents=True, exist_ok=True)
        (folder / "flwr-home" / "config.toml").write_text(
            f'[superlink]\ndefault = "freshrec"\n\n[superlink.freshrec]\naddress = "{superlink}"\ninsecure = true\n')
        Plan.make(self.settings, self.config, stream).save(folder / "plan")
        split_by_user(stream, self.config.clients, folder / "clients")
        components = "\n".join(f'{key} = "{value}"' for key, value in APP_COMPONENTS.items())
        (folder / "app").mkdir(exist_ok=True)
        (folder / "app" / "pyproject.toml").write_text(f'''[project]
name = "freshrec-federated"
version = "1.0.0"
description = "freshrec: an online recommender trained by clients that keep their users' events (SecAgg+)"
license = "Apache-2.0"
dependencies = []   # freshrec[federated], installed where the SuperLink and the SuperNodes run

[tool.flwr.app]
publisher = "freshrec"

[tool.flwr.app.components]
{components}

[tool.flwr.app.config]
plan = "{folder / 'plan'}"
''')
        return folder


def split_by_user(stream: Stream, clients: int, folder: Path) -> None:
    """Write each client's events (those of its users: a stable hash of the user id) to
    `folder`/<k>.arrow, k = 0 .. clients - 1."""
    users = [f.name for f in stream.fields if f.owner == "user"]
    if not users:
        raise ValueError(f"{stream.name}: no user-owned field to split the stream's events by")
    folder.mkdir(parents=True, exist_ok=True)
    part = hash_values(stream.table.column(users[0]), field_salt(users[0])) % clients   # ids are positive int64
    for k in range(clients):
        mine = np.flatnonzero(part == k)
        Stream(stream.table.take(pa.array(mine)), stream.positions[mine], stream.fields,
               stream.name).save(folder / f"{k}.arrow")


class _SimulatedDropouts(logging.Filter):
    """Hides what Flower logs for the dropouts `dropout_mod` simulates (they are the point): their
    tracebacks and the line before each."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return DROPPED_OUT not in message and not message.startswith("An exception was raised when processing")


def _quiet_flower(dropouts: bool) -> None:
    """Flower's log to errors only (its per-round lines and its notice that `run_simulation` will give
    way to `flwr run`: a run here is one Python call), simulated dropouts hidden; Ray's accelerator
    notice off."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.ERROR)
    for old in [f for f in flower.filters if isinstance(f, _SimulatedDropouts)]:
        flower.removeFilter(old)
    if dropouts:
        flower.addFilter(_SimulatedDropouts())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
