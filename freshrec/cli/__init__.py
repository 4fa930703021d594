"""The `freshrec` command, one module per sub-command.

    freshrec datasets                     # what is under $FRESHREC_DATA
    freshrec replay --format movielens-100k --json
    freshrec replay --format csv --data ratings.csv --user userId --item movieId \\
        --time timestamp --label 'rating>=4' --dry-run --json
    freshrec run --config freshrec.yaml --print-config                       # what a run would use
    freshrec run --format movielens-100k --state out/state                   # the whole loop + server
    freshrec serve --registry out/state/registry --port 8001                 # a server alone
    freshrec produce --format movielens-100k --bootstrap 127.0.0.1:9092 --topic ratings  # a data set to Kafka
    freshrec autoscale --config kafka.yaml --max-workers 3 --metric lag --threshold 5000   # size follows lag
    freshrec autoscale --metric lag --threshold 5000 --max-workers 3 --dry-run lag.csv     # its decisions
    freshrec config show | check FILE
    freshrec deploy --config freshrec.yaml --image registry/freshrec:0.1 > k8s.yaml    # Kubernetes manifests
    freshrec evaluate ab --format simulator --limit 6000 --report ab-report
    freshrec automl --format movielens-100k --trials 40 --timeout 30m --study ml.db --out best.yaml --report r
    freshrec federated --format movielens-100k --clients 20 --rounds 30 --noise 1.0 --clip 0.2   # SecAgg+, DP
    freshrec federated --format movielens-100k --clients 2 --deploy ml-federation   # a Flower App for a SuperLink
    freshrec devices --config freshrec.yaml                                  # devices, GPU links, placement

Conventions: `--json` makes the last stdout line one JSON object; progress and tables go to
stderr. Exit codes (`freshrec.cli.errors.guarded`): 0 ok, 2 usage or configuration error (one
line naming the option or key), 1 runtime failure (one line; a traceback only with `--debug`).
Heavy modules (torch, numba, the readers) load inside the commands, so `--help` and `config` answer
at once.
"""

from __future__ import annotations

import sys

import typer

from freshrec.cli.automl import automl_command
from freshrec.cli.autoscale import autoscale_command
from freshrec.cli.config import config_app
from freshrec.cli.datasets import datasets_command
from freshrec.cli.deploy import deploy_command
from freshrec.cli.devices import devices_command
from freshrec.cli.evaluate import evaluate_app
from freshrec.cli.federated import federated_command
from freshrec.cli.produce import produce_command
from freshrec.cli.replay import replay_command
from freshrec.cli.run import run_command
from freshrec.cli.serve import serve_command

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="freshrec: real-time training of recommendation models.")
app.command("datasets")(datasets_command)
app.command("replay")(replay_command)
app.command("run")(run_command)
app.command("serve")(serve_command)
app.command("produce")(produce_command)
app.command("autoscale")(autoscale_command)
app.command("automl")(automl_command)
app.command("federated")(federated_command)
app.command("deploy")(deploy_command)
app.command("devices")(devices_command)
app.add_typer(config_app, name="config")
app.add_typer(evaluate_app, name="evaluate")


TRAINING_COMMANDS = ("run", "replay", "evaluate", "automl", "federated")


def main() -> None:
    """Entry point of the `freshrec` script."""
    if sys.argv[1:2] and sys.argv[1] in TRAINING_COMMANDS:
        _no_compiler_for_optimizers()
    app()


def _no_compiler_for_optimizers() -> None:
    """torch.optim's bookkeeping methods (`add_param_group`, `state_dict`, `load_state_dict`,
    `zero_grad`) import torch._dynamo, about a second, at their first call, only to wrap themselves
    so that torch.compile does not trace them. No freshrec command compiles anything, so in its
    own processes a training command marks them as wrapped already (the wrapper's cache: the plain
    method). Any other use of torch in the process is unchanged; a torch without that cache
    attribute just pays the import."""
    import torch

    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if method is not None and not hasattr(method, "__dynamo_disable"):
            method.__dynamo_disable = method
