"""`freshrec replay`: read, validate, featurise and batch a stream; with `--model`, also train
online (each batch scored before it is learned); with `--serve`, serve the model as it learns."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import MODEL, PUBLISH, SERVING, SOURCE, build_config, overriding
from freshrec.config import FreshrecConfig

__all__ = ["replay_command"]

READ_ROWS = 65_536
"""Rows read at a time."""


@guarded
@overriding(SOURCE, MODEL, SERVING, PUBLISH)
def replay_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read, validate and batch only.")] = False,
    dead_letters: Annotated[Path, typer.Option(help="JSONL file for rejected records.")]
    = Path("dead_letters.jsonl"),
    serve: Annotated[bool, typer.Option("--serve", help="--model: also serve it over HTTP (until Ctrl-C).")]
    = False,
    registry: Annotated[Path, typer.Option(help="--serve: model registry directory.")] = Path("out/registry"),
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Replay a data set: read, validate, featurise and batch it; with --model, also train online
    (and with --serve, serve the model as it learns, taking live events on POST /events)."""
    from freshrec.cli.output import emit, note
    from freshrec.cli.serve import check_port
    from freshrec.engine.build import resolve_data

    settings = build_config(None, overrides or {})
    learn = "model.name" in (overrides or {}) and not dry_run
    if serve and not learn:
        raise UsageError("--serve needs --model (and no --dry-run)")
    if serve:
        check_port(settings.serve.host, settings.serve.port)
    settings, found = resolve_data(settings)
    if found:
        note(found)
    figures = _replay(settings, learn, dead_letters, registry if serve else None, quiet)
    if not figures["rows"] and figures["dead_letters"]:
        raise RuntimeError(f"every record was rejected ({figures['dead_letters']:,} dead letters in "
                           f"{dead_letters}): nothing to replay")
    s = settings.source
    figures.update({"format": s.format, "data": str(s.data) if s.data else None, "dry_run": not learn,
                    "note": found or None})
    emit(figures, as_json, f"online {settings.model.name}" if learn else "replay")


def _replay(settings: FreshrecConfig, learn: bool, dead_letter_path: Path, registry: Path | None,
            quiet: bool) -> dict:
    """Read the stream (paced by `source.speed`), ingest or learn it (and serve from `registry`); the
    figures."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from freshrec.cli.output import err
    from freshrec.engine import ingest, train_online
    from freshrec.engine.build import feature_specs, model_config, open_stream, trainer_config
    from freshrec.events.deadletter import JsonlDeadLetters
    from freshrec.features import FeaturePipeline
    from freshrec.models import build_model
    from freshrec.train import OnlineTrainer

    started, batch_size = time.perf_counter(), settings.training.online_batch_size
    window = settings.training.online_batch_window
    quiet = quiet or not err.is_terminal   # a bar only on a terminal
    with JsonlDeadLetters(dead_letter_path) as letters:
        source = open_stream(settings, letters, READ_ROWS)
        specs = feature_specs(settings, source.fields)
        pipeline = FeaturePipeline(specs, settings.features.target)
        trainer = OnlineTrainer(build_model(settings.model.name, specs, model_config(settings)),
                                trainer_config(settings)) if learn else None
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                      TimeElapsedColumn(), console=err, disable=quiet, transient=True) as bar:
            task = bar.add_task(f"replay {settings.source.format}", total=settings.source.limit, status="")
            show = None if quiet else _progress(lambda rows, status: bar.update(task, advance=rows, status=status),
                                                trainer)
            if registry is not None:
                figures = _serve(settings, registry, source, source.fields, pipeline, trainer, show, letters)
            elif trainer is None:
                figures = ingest(source, pipeline, batch_size, on_chunk=show, dead_letters=letters,
                                 batch_window=window).as_dict()
            else:
                figures = train_online(source, pipeline, trainer, batch_size, on_chunk=show, dead_letters=letters,
                                       batch_window=window)
        figures["seconds"] = time.perf_counter() - started
        figures["rows_per_s"] = figures["rows"] / figures["seconds"] if figures["seconds"] > 0 else 0.0
        figures["dead_letters"] = letters.total
    figures["dead_letter_file"] = str(dead_letter_path) if letters.total else None
    return figures


def _serve(settings: FreshrecConfig, registry_path: Path, chunks, fields, pipeline, trainer, show, letters) -> dict:
    """`replay --serve`: train in a thread, serve over HTTP in the main one (POST /events feeds the trainer)."""
    from freshrec.cli.output import note
    from freshrec.engine.build import engine_config, serve_config
    from freshrec.engine.sync import Publisher
    from freshrec.engine.train_serve import train_and_serve
    from freshrec.events.live import LiveQueue
    from freshrec.serve import ModelService, create_app
    from freshrec.snapshot import ModelRegistry

    registry, live = ModelRegistry(registry_path), LiveQueue(fields)
    publisher = Publisher(registry, trainer.model, fields, engine_config(settings).sync)
    service = ModelService(registry, sink=live)
    app = create_app(service, serve_config(settings))
    host, port = settings.serve.host, settings.serve.port
    note(f"serving on {settings.serve.url()} (registry {registry_path}); Ctrl-C stops")
    summary = train_and_serve(chunks, live, pipeline, trainer, publisher, app, host, port,
                              settings.training.online_batch_size, show, letters,
                              settings.training.online_batch_window)
    return {**summary.as_dict(), **trainer.report(), "model": type(trainer.model).__name__,
            "versions_published": publisher.published, "served_version": service.version}


def _progress(update: Callable[[int, str], None], trainer) -> Callable:
    """The progress callback: rows, rows/s and, when training, the AUC over the recent window."""
    shown, started = [0], time.monotonic()

    def show(work, summary) -> None:
        status = f"{summary.rows:,} rows  {summary.rows / max(time.monotonic() - started, 1e-9):,.0f} rows/s"
        if trainer is not None and trainer.batches - shown[0] >= 50:  # the window costs a flush
            shown[0] = trainer.batches
            window_auc = trainer.metrics.window()["auc"]
            status += f"  AUC(window) {window_auc:.4f}" if window_auc is not None else ""
        update(len(work.whole), status)

    return show
