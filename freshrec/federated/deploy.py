"""The Flower App that `FederatedTrainer.deploy` (`freshrec federated --deploy DIR`) writes, for
Flower's deployment engine: a SuperLink runs `server`, a SuperNode on each device or partner runs
`client`, and `flwr run DIR` starts the rounds.

`server` reads the plan named by the run config (`plan`: the catalogue, the windows, the initial
arrays, central training's figures), runs the secure rounds as the simulation does and writes
`result.json` into the plan's folder. `client` reads the same plan (the catalogue and the settings:
what the operator publishes) and learns the events in the file its SuperNode names in its node config
(`data`), keeping its users' rows; SecAgg+'s mod masks every answer.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from freshrec.federated.client import FreshrecClient, client_mods
from freshrec.federated.plan import Plan
from freshrec.federated.server import run_rounds

__all__ = ["client", "server"]

server = ServerApp()


@server.main()
def _rounds(grid, context: Context) -> None:
    folder = Path(str(context.run_config["plan"]))
    plan = Plan.load(folder)
    strategy = plan.strategy()
    result = plan.result(run_rounds(grid, context, strategy, plan.workflow()))
    (folder / "result.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")


@lru_cache(maxsize=4)
def _plan(folder: str) -> Plan:
    return Plan.load(Path(folder))


def _client(context: Context):
    events = context.node_config.get("data")
    if events is None or not Path(str(events)).is_file():
        raise ValueError(f"this SuperNode names no events file (node config data={events!r}): start it with "
                         "--node-config 'data=\"PATH/TO/K.arrow\"' (freshrec federated --deploy writes them)")
    plan = _plan(str(context.run_config["plan"]))
    return FreshrecClient(plan.setup(), context, Path(str(events))).to_client()


client = ClientApp(client_fn=_client, mods=client_mods())
