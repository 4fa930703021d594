"""`freshrec deploy`: the Kubernetes manifests of a deployment (`freshrec.autoscale.manifests`): the
elastic trainer group, the servers and the autoscaler, as YAML for `kubectl apply -f`.

>>> from typer.testing import CliRunner
>>> from freshrec.cli import app
>>> done = CliRunner().invoke(app, ["deploy", "--image", "freshrec:0.1", "--offline-interval", "off"])
>>> done.exit_code, done.stdout.count("\\n---\\n") + 1
(0, 10)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import OFFLINE, build_config, overriding

__all__ = ["deploy_command"]

OFFLINE_INTERVAL = next(flag for flag in OFFLINE if flag.key == "training.offline_interval")


@guarded
@overriding((OFFLINE_INTERVAL,))
def deploy_command(
    image: Annotated[str, typer.Option(help="Container image with freshrec installed (and torch, CUDA for GPUs).")],
    config: Annotated[Path | None, typer.Option(help="YAML configuration of the group (autoscale.name, namespace, "
                                                     "min, max; gpu; serve.port...).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the manifests here (default: stdout).")] = None,
    servers: Annotated[int, typer.Option(help="Server pods (freshrec serve).")] = 2,
    storage: Annotated[str, typer.Option(help="Size of the shared state volume (ReadWriteMany).")] = "50Gi",
    overrides: dict[str, Any] | None = None,
) -> None:
    """Print (or write to --out) the Kubernetes objects that run the config: a trainer StatefulSet
    scaled by `freshrec autoscale --executor kubernetes`, servers behind a Service, their shared state
    volume. Apply them with `kubectl apply -f`."""
    from freshrec.autoscale.manifests import manifests, render
    from freshrec.cli.output import note

    settings = build_config(config, overrides or {})
    try:
        objects = manifests(settings, image, servers=servers, storage=storage)
    except ValueError as error:   # ConfigError included: both are the command line's or the config's
        raise UsageError(f"{config}: {error}" if config is not None else str(error)) from None
    text = render(objects)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)   # created anew, readable by its owner alone: the config's Secret is in it
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as file:
        file.write(text)
    note(f"wrote {len(objects)} objects to {out} (mode 600: it holds the config's secrets): kubectl apply -f {out}")
