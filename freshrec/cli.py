"""The `freshrec` command.

    freshrec datasets                     # what is under $FRESHREC_DATA
    freshrec replay --format movielens-100k --data ../shared/data/movielens-100k --json
    freshrec replay --format csv --data ratings.csv --user userId --item movieId \\
        --time timestamp --label 'rating>=4' --dry-run --json
    freshrec replay --format movielens-100k --model fm --serve --port 8000   # train + serve
    freshrec serve --registry out/registry --port 8001                       # a server alone

Conventions: `--json` makes the last stdout line one JSON object; progress and tables go to
stderr. Exit codes: 0 ok, 2 usage or configuration error (one line), 1 runtime failure (one
line; a traceback only with `--debug`).
"""

from __future__ import annotations

import os
import sys
import time as time_module
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from freshrec.cli_common import UsageError, emit, err, fail, model_options, resolve_data
from freshrec.cli_engine import run_command, serve_command
from freshrec.config import data_root
from freshrec.engine import IngestSummary, ingest
from freshrec.engine import train_online
from freshrec.engine.serving import train_and_serve
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.datasets import (
    FORMATS,
    ColumnMapping,
    UnknownFormat,
    discover,
    open_source,
)
from freshrec.events.datasets.fetch import FetchError
from freshrec.events.deadletter import JsonlDeadLetters
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import SimulatorConfig
from freshrec.events.source import limited, paced
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import MODELS, ModelConfig, build_model
from freshrec.serve import ModelService, ServeConfig, create_app
from freshrec.serve.background import ADMIN_TOKEN_ENV
from freshrec.snapshot import ModelRegistry
from freshrec.subcommands import config_app, evaluate_app
from freshrec.train import OnlineTrainer, TrainerConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="freshrec: real-time training of recommendation models.")


@app.command()
def datasets(as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False) -> None:
    """List the data sets found under $FRESHREC_DATA (default ../shared/data)."""
    root = data_root()
    found = discover(root)
    if as_json:
        rows = [{"format": d.format, "path": str(d.path), "description": d.description} for d in found]
        sys.stdout.write(orjson.dumps({"root": str(root), "datasets": rows}).decode() + "\n")
        return
    if not found:
        err.print(f"no data sets under {root} (set FRESHREC_DATA)")
        return
    table = Table(title=f"data sets under {root}")
    for name in ("format", "path", "description"):
        table.add_column(name, overflow="fold")
    for d in found:
        table.add_row(d.format, str(d.path), d.description)
    Console().print(table)


def _mapping(user: str | None, item: str | None, time: str | None, label: str | None, cat: list[str],
             dense: list[str], multi: list[str], sep: str, delimiter: str | None) -> ColumnMapping | None:
    if not (user or item or time):
        return None
    if not (user and item and time):
        raise UsageError("a column mapping needs --user, --item and --time")
    return ColumnMapping(user=user, item=item, time=time, label=label, categorical=tuple(cat),
                         dense=tuple(dense), multi=tuple(multi), multi_separator=sep, delimiter=delimiter)


@app.command()
def replay(
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
    data: Annotated[Path | None, typer.Option(help="File or folder to replay.")] = None,
    user: Annotated[str | None, typer.Option(help="csv/parquet: the user id column.")] = None,
    item: Annotated[str | None, typer.Option(help="csv/parquet: the item id column.")] = None,
    time: Annotated[str | None, typer.Option(help="csv/parquet: event time (epoch s or ISO).")] = None,
    label: Annotated[str | None, typer.Option(help="A 0/1 column or a rule like 'rating>=4'.")] = None,
    cat: Annotated[list[str], typer.Option(help="Extra categorical column (repeatable).")] = [],  # noqa: B006
    dense: Annotated[list[str], typer.Option(help="Extra dense column (repeatable).")] = [],  # noqa: B006
    multi: Annotated[list[str], typer.Option(help="Multi-valued categorical column (repeatable).")] = [],  # noqa: B006
    sep: Annotated[str, typer.Option(help="Separator inside --multi values.")] = "|",
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read, validate and batch only.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after N rows.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 512,
    speed: Annotated[float | None, typer.Option(help="Pace by event time: 60 = 1 h per minute.")] = None,
    dead_letters: Annotated[Path, typer.Option(help="JSONL file for rejected records.")] = Path(
        "dead_letters.jsonl"),
    seed: Annotated[int, typer.Option(help="Seed of the simulator and of the model.")] = 0,
    model: Annotated[str | None, typer.Option(
        help=f"Train this model online ({'|'.join(MODELS)}), each batch scored before it is learned.")] = None,
    dim: Annotated[int, typer.Option(help="--model: embedding width (FM factors).")] = 16,
    lr: Annotated[float, typer.Option(help="--model: learning rate (row-wise Adagrad; dense Adagrad).")] = 0.05,
    target: Annotated[str | None, typer.Option(
        help="--model: the graded column the label comes from (e.g. rating), for --ordinal-levels.")] = None,
    ordinal_levels: Annotated[str | None, typer.Option(
        help="--model: other levels of --target learned beside the label, e.g. 2,3,5 for the label "
             "rating>=4 of 1-5 stars.")] = None,
    fallback: Annotated[str | None, typer.Option(
        help="'simulator': replay the simulator when the data set cannot be found or fetched.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="--model: also serve it over HTTP (until Ctrl-C).")] = False,
    registry: Annotated[Path, typer.Option(help="--serve: model registry directory.")] = Path("out/registry"),
    host: Annotated[str, typer.Option(help="--serve: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="--serve: port.")] = 8000,
    sync_interval: Annotated[float, typer.Option(help="--serve: seconds between published deltas.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """Replay a data set: read, validate, featurise and batch it; with --model, also train online
    (and with --serve, serve the model as it learns, taking live events on POST /events)."""
    try:
        if fmt not in FORMATS:
            raise UnknownFormat(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
        if batch_size <= 0 or (limit is not None and limit < 0) or (speed is not None and speed <= 0):
            raise UsageError("--batch-size and --speed must be positive, --limit non-negative")
        learner = None if dry_run else model_options(model, dim, lr, seed, ordinal_levels)
        if serve and learner is None:
            raise UsageError("--serve needs --model (and no --dry-run)")
        if bool(ordinal_levels) != bool(target):
            raise UsageError("--ordinal-levels and --target go together")
        serving = _Serving(registry, host, port, sync_interval) if serve else None
        mapping = _mapping(user, item, time, label, cat, dense, multi, sep, delimiter)
        fmt, data, note = resolve_data(fmt, data, fallback)
        if note:
            err.print(note, markup=False, highlight=False)
        figures = _replay(fmt, data, mapping, limit, batch_size, speed, dead_letters, seed, quiet, learner,
                          serving, target)
    except (UsageError, UnknownFormat, typer.BadParameter) as error:
        if debug:
            raise
        fail(str(error), 2)
    except (FileNotFoundError, ValueError, FetchError, OSError) as error:
        if debug:
            raise
        fail(str(error), 1)
    figures.update({"format": fmt, "data": str(data) if data else None, "dry_run": learner is None,
                    "note": note or None})
    emit(figures, as_json, "replay" if learner is None else f"online {learner[0]}")


def _replay(fmt: str, data: Path | None, mapping: ColumnMapping | None, limit: int | None, batch_size: int,
            speed: float | None, dead_letter_path: Path, seed: int, quiet: bool,
            learner: tuple[str, ModelConfig] | None = None, serving: _Serving | None = None,
            target: str | None = None) -> dict:
    started = time_module.perf_counter()
    with JsonlDeadLetters(dead_letter_path) as letters:
        source = open_source(fmt, data, letters, mapping=mapping,
                             simulator=SimulatorConfig(seed=seed, total_events=limit or 1_000_000))
        if speed is not None and not source.has_event_time:
            raise UsageError(f"{fmt} has no event time; --speed needs one")
        specs = default_specs(source.fields, dim=learner[1].dim if learner else 16)
        pipeline = FeaturePipeline(specs, target)
        chunks = limited(source, limit)
        chunks = paced(chunks, speed) if speed is not None else chunks
        trainer = None if learner is None else OnlineTrainer(
            build_model(learner[0], specs, learner[1]), TrainerConfig(seed=learner[1].seed))
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                      TimeElapsedColumn(), console=err, disable=quiet, transient=True) as bar:
            task = bar.add_task(f"replay {fmt}", total=limit, status="")
            show = None if quiet else _progress(bar, task, trainer)
            if serving is not None:
                figures = serving.run(chunks, source.fields, pipeline, trainer, batch_size, show, letters)
            elif trainer is None:
                figures = ingest(chunks, pipeline, batch_size, on_batch=show, dead_letters=letters).as_dict()
            else:
                figures = train_online(chunks, pipeline, trainer, batch_size, on_batch=show, dead_letters=letters)
        figures["seconds"] = time_module.perf_counter() - started
        figures["rows_per_s"] = figures["rows"] / figures["seconds"] if figures["seconds"] > 0 else 0.0
    figures["dead_letter_file"] = str(dead_letter_path) if letters.total else None
    return figures


class _Serving:
    """`replay --serve`: train in a thread, serve over HTTP in the main one."""

    def __init__(self, registry: Path, host: str, port: int, sync_interval: float) -> None:
        if not sync_interval > 0 or not 0 < port < 65536:
            raise UsageError("--sync-interval must be positive and --port in 1..65535")
        self.registry, self.host, self.port, self.sync_interval = registry, host, port, sync_interval

    def run(self, chunks, fields, pipeline: FeaturePipeline, trainer: OnlineTrainer, batch_size: int,
            show: Callable | None, letters: JsonlDeadLetters) -> dict:
        registry = ModelRegistry(self.registry)
        live = LiveQueue(fields)
        publisher = Publisher(registry, trainer.model, fields, SyncConfig(sync_interval=self.sync_interval))
        service = ModelService(registry, sink=live)
        app = create_app(service, ServeConfig(admin_token=os.environ.get(ADMIN_TOKEN_ENV)))
        err.print(f"serving on http://{self.host}:{self.port} (registry {self.registry}); Ctrl-C stops",
                  markup=False, highlight=False)
        summary = train_and_serve(chunks, live, pipeline, trainer, publisher, app, self.host, self.port,
                                  batch_size, show, letters)
        return {**summary.as_dict(), **trainer.report(), "model": type(trainer.model).__name__,
                "versions_published": publisher.published, "served_version": service.version}


def _progress(bar: Progress, task: TaskID, trainer: OnlineTrainer | None) -> Callable:
    """The progress callback: rows, rows/s and, when training, the AUC over the recent window."""
    shown = [0]

    def show(batch, summary: IngestSummary) -> None:
        status = (f"{summary.rows:,} rows  "
                  f"{summary.rows / max(bar.tasks[0].elapsed or 1e-9, 1e-9):,.0f} rows/s")
        if trainer is not None and trainer.batches - shown[0] >= 50:  # the window costs a flush
            shown[0] = trainer.batches
            window_auc = trainer.metrics.window()["auc"]
            status += f"  AUC(window) {window_auc:.4f}" if window_auc is not None else ""
        bar.update(task, advance=len(batch), status=status)

    return show


app.command("serve")(serve_command)
app.command("run")(run_command)
app.add_typer(config_app, name="config")
app.add_typer(evaluate_app, name="evaluate")


def main() -> None:
    """Entry point of the `freshrec` script."""
    app()


if __name__ == "__main__":
    main()
