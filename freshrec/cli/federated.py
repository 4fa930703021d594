"""`freshrec federated`: federated training with secure aggregation, simulated on one machine (Flower's
simulation engine), compared with central online training on the same stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import SOURCE, build_config, overriding

__all__ = ["federated_command"]


@guarded
@overriding(SOURCE)
def federated_command(
    config: Annotated[Path | None, typer.Option(help="YAML configuration of the model (see `freshrec config "
                                                     "show`).")] = None,
    clients: Annotated[int, typer.Option(help="Clients the users are split into (disjoint, by user).")] = 20,
    rounds: Annotated[int, typer.Option(help="Rounds: windows of event time with equal numbers of events.")] = 30,
    fraction: Annotated[float, typer.Option(help="Share of the clients sampled a round (the last: all).")] = 1.0,
    strategy: Annotated[str, typer.Option(help="fedavg, or fedadam (adaptive server optimizer).")] = "fedavg",
    server_lr: Annotated[float, typer.Option(help="fedadam: the server's learning rate.")] = 0.1,
    tau: Annotated[float, typer.Option(help="fedadam: its adaptivity (added to the root of v).")] = 0.01,
    noise: Annotated[float | None, typer.Option(help="Differential privacy: the Gaussian noise multiplier "
                                                     "(off without it).")] = None,
    clip: Annotated[float, typer.Option(help="Differential privacy: L2 norm each client's update is "
                                             "clipped to.")] = 1.0,
    delta: Annotated[float, typer.Option(help="Differential privacy: the delta epsilon is reported at.")] = 1e-5,
    dropout: Annotated[float, typer.Option(help="Probability that a sampled client drops out mid-round "
                                                "(simulated).")] = 0.0,
    holdout: Annotated[float, typer.Option(help="The stream's last share the AUCs are compared on.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seeds the simulated dropouts (which client drops in which round).")] = 0,
    workers: Annotated[int | None, typer.Option(help="Clients trained at once (default: the CPU cores).")] = None,
    audit: Annotated[Path | None, typer.Option(help="Write what each client produced and sent, and what the "
                                                    "server recovered, here (.npz per node and round).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result (figures and rounds) as JSON here.")] = None,
    deploy: Annotated[Path | None, typer.Option(help="Instead of simulating, write a Flower App here for a "
                                                     "SuperLink and SuperNodes (`flwr run DIR/app`).")] = None,
    superlink: Annotated[str, typer.Option(help="--deploy: the SuperLink's address `flwr run` connects to "
                                                "(insecure: for TLS, edit DIR/flwr-home/config.toml).")]
    = "127.0.0.1:8000",
    dead_letters: Annotated[Path, typer.Option(help="JSONL file for rejected records.")]
    = Path("dead_letters.jsonl"),
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a model federated over clients that keep their users' events (SecAgg+); compare with central."""
    from freshrec.automl.stream import read_stream
    from freshrec.cli.output import emit, note
    from freshrec.events.deadletter import JsonlDeadLetters

    try:
        from freshrec.federated import FederatedConfig, FederatedTrainer
    except ModuleNotFoundError as missing:
        raise RuntimeError(f"freshrec federated needs {missing.name}: pip install 'freshrec[federated]'") from None

    settings = build_config(config, overrides or {})
    try:
        federation = FederatedConfig(clients=clients, rounds=rounds, fraction=fraction, strategy=strategy,
                                     server_lr=server_lr, tau=tau, noise=noise, clip=clip, delta=delta,
                                     dropout=dropout, holdout=holdout, seed=seed, workers=workers)
    except ValueError as error:
        raise UsageError(f"--{str(error).replace('_', '-')}") from None
    with JsonlDeadLetters(dead_letters) as letters:
        stream = read_stream(None, settings, letters)
    trainer = FederatedTrainer(settings, federation)
    if deploy is not None:
        folder = trainer.deploy(stream, deploy, superlink)
        note(f"Flower App written to {folder}: start a SuperLink, a SuperNode per client with --node-config "
             f"'data=\"{folder}/clients/K.arrow\"', then FLWR_HOME={folder}/flwr-home flwr run {folder}/app freshrec")
        emit({"app": str(folder), "clients": clients, "rounds": rounds, "result": str(folder / "plan" / "result.json")},
             as_json, "federated --deploy")
        return
    note(f"{len(stream):,} events of {stream.name}: {clients} clients, {rounds} rounds")
    result = trainer.run(stream, audit=audit, progress=None if as_json else _say)
    figures = result.to_json()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=1) + "\n")
    if as_json:
        emit(figures, True, "federated")
        return
    dropped = sum(r["dropped"] for r in figures["rounds"])
    emit({"federated.auc": result.federated["auc"], "central.auc": result.central["auc"], "auc_gap": result.gap,
          "evaluation_rows": result.federated["rows"], "epsilon": result.epsilon,
          "delta": figures["delta"], "dropped_out": dropped, "shared_rows": result.shared_rows,
          "dead_letters": letters.total, "result": str(out) if out else None}, False,
         f"federated: {strategy}, {clients} clients, {rounds} rounds")


def _say(record) -> None:
    from freshrec.cli.output import note

    note(f"round {record.round}: {record.answered} of {record.sampled} clients answered, "
         f"step norm {record.step_norm:.4g}")
