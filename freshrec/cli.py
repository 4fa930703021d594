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
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from freshrec.config import ConfigError, cache_dir, data_root, load_config, parse_duration
from freshrec.engine import IngestSummary, ingest
from freshrec.engine.online import train_online
from freshrec.engine.run import KafkaOptions, RunOptions, kafka_source, run
from freshrec.engine.serving import serve_until_signal, train_and_serve
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.datasets import (
    FORMATS,
    ColumnMapping,
    UnknownFormat,
    discover,
    open_source,
)
from freshrec.events.datasets.fetch import FetchError, fetch_movielens
from freshrec.events.deadletter import JsonlDeadLetters
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import SimulatorConfig
from freshrec.events.source import LimitedSource, limited, paced
from freshrec.features import FeaturePipeline, default_specs
from freshrec.join import JoinConfig
from freshrec.models import MODELS, ModelConfig, build_model
from freshrec.serve import ModelService, ServeConfig, create_app
from freshrec.serve.background import ADMIN_TOKEN_ENV, BackgroundServer
from freshrec.snapshot import ModelRegistry
from freshrec.subcommands import config_app, evaluate_app
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.offline import OfflineConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="freshrec: real-time training of recommendation models.")
err = Console(stderr=True)


class UsageError(Exception):
    """A bad option or value: exit code 2."""


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _emit(figures: dict, as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if value not in (None, {}):
            table.add_row(key, _human(key, value))
    Console().print(table)


def _human(key: str, value: object) -> str:
    """A figure as a person reads it: dates for event times, percentages for rates."""
    if key.endswith("_ts") and isinstance(value, float):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    if key.endswith("_rate") and isinstance(value, float):
        return f"{100 * value:.2f} %"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


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


def _resolve_data(fmt: str, data: Path | None, fallback: str | None) -> tuple[str, Path | None, str]:
    """(format, path, note): finds or downloads MovieLens when --data is left out."""
    if data is not None or fmt != "movielens-100k":
        return fmt, data, ""
    try:
        path = fetch_movielens(data_root(), cache_dir())
        return fmt, path, f"MovieLens-100k from {path}"
    except FetchError as error:
        if fallback != "simulator":
            raise
        return "simulator", None, f"MovieLens-100k unavailable ({error}); replaying the simulator instead"


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
        learner = None if dry_run else _learner(model, dim, lr, seed)
        if serve and learner is None:
            raise UsageError("--serve needs --model (and no --dry-run)")
        serving = _Serving(registry, host, port, sync_interval) if serve else None
        mapping = _mapping(user, item, time, label, cat, dense, multi, sep, delimiter)
        fmt, data, note = _resolve_data(fmt, data, fallback)
        if note:
            err.print(note, markup=False, highlight=False)
        figures = _replay(fmt, data, mapping, limit, batch_size, speed, dead_letters, seed, quiet, learner,
                          serving)
    except (UsageError, UnknownFormat, typer.BadParameter) as error:
        if debug:
            raise
        _fail(str(error), 2)
    except (FileNotFoundError, ValueError, FetchError, OSError) as error:
        if debug:
            raise
        _fail(str(error), 1)
    figures.update({"format": fmt, "data": str(data) if data else None, "dry_run": learner is None,
                    "note": note or None})
    _emit(figures, as_json, "replay" if learner is None else f"online {learner[0]}")


def _learner(model: str | None, dim: int, lr: float, seed: int) -> tuple[str, ModelConfig] | None:
    """(model name, shared config) for `--model`, None for ingestion only."""
    if model is None:
        return None
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    if dim <= 0 or not lr > 0:
        raise UsageError("--dim and --lr must be positive")
    return model, ModelConfig(dim=dim, lr=lr, seed=seed)


def _replay(fmt: str, data: Path | None, mapping: ColumnMapping | None, limit: int | None, batch_size: int,
            speed: float | None, dead_letter_path: Path, seed: int, quiet: bool,
            learner: tuple[str, ModelConfig] | None = None, serving: _Serving | None = None) -> dict:
    started = time_module.perf_counter()
    with JsonlDeadLetters(dead_letter_path) as letters:
        source = open_source(fmt, data, letters, mapping=mapping,
                             simulator=SimulatorConfig(seed=seed, total_events=limit or 1_000_000))
        if speed is not None and not source.has_event_time:
            raise UsageError(f"{fmt} has no event time; --speed needs one")
        specs = default_specs(source.fields, dim=learner[1].dim if learner else 16)
        pipeline = FeaturePipeline(specs)
        chunks = limited(source, limit)
        chunks = paced(chunks, speed) if speed is not None else chunks
        trainer = None if learner is None else OnlineTrainer(
            build_model(learner[0], specs, learner[1]), TrainerConfig(seed=learner[1].seed))
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                      TimeElapsedColumn(), console=err, disable=quiet, transient=True) as bar:
            task = bar.add_task(f"replay {fmt}", total=limit, status="")
            show = None if quiet else _progress(bar, task, trainer)
            if serving is not None:
                figures = serving.run(chunks, source.fields, pipeline, trainer, batch_size, show)
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
            show: Callable | None) -> dict:
        registry = ModelRegistry(self.registry)
        live = LiveQueue(fields)
        publisher = Publisher(registry, trainer.model, fields, SyncConfig(sync_interval=self.sync_interval))
        service = ModelService(registry, sink=live)
        app = create_app(service, ServeConfig(admin_token=os.environ.get(ADMIN_TOKEN_ENV)))
        err.print(f"serving on http://{self.host}:{self.port} (registry {self.registry}); Ctrl-C stops",
                  markup=False, highlight=False)
        summary = train_and_serve(chunks, live, pipeline, trainer, publisher, app, self.host, self.port,
                                  batch_size, show)
        return {**summary.as_dict(), **trainer.report(), "model": type(trainer.model).__name__,
                "versions_published": publisher.published, "served_version": service.version}


@app.command("serve")
def serve_command(
    registry: Annotated[Path, typer.Option(help="Model registry directory to serve from.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """Serve the newest model in REGISTRY and follow its deltas (admin token: $FRESHREC_ADMIN_TOKEN)."""
    import uvicorn

    try:
        if not registry.is_dir():
            raise UsageError(f"--registry {registry} is not a directory")
        if not 0 < port < 65536:
            raise UsageError("--port must be in 1..65535")
        app_ = create_app(ModelService(ModelRegistry(registry)),
                          ServeConfig(admin_token=os.environ.get(ADMIN_TOKEN_ENV)))
        err.print(f"serving {registry} on http://{host}:{port}", markup=False, highlight=False)
        serve_until_signal(uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning")))
    except UsageError as error:
        if debug:
            raise
        _fail(str(error), 2)
    except OSError as error:
        if debug:
            raise
        _fail(str(error), 1)


@app.command("run")
def run_command(
    fmt: Annotated[str, typer.Option("--format", help="The data set (replayed, or the shape of the Kafka events).")]
    = "movielens-100k",
    data: Annotated[Path | None, typer.Option(help="File or folder to replay.")] = None,
    source: Annotated[str, typer.Option(help="replay (the data set, in time order) or kafka.")] = "replay",
    bootstrap: Annotated[str, typer.Option(help="kafka: bootstrap servers.")] = "127.0.0.1:9092",
    topic: Annotated[str, typer.Option(help="kafka: the events topic (dead letters: TOPIC.dead).")]
    = "freshrec.events",
    idle_timeout: Annotated[float | None, typer.Option(help="kafka: stop after this many idle seconds.")] = None,
    kafka_setting: Annotated[list[str], typer.Option(help="kafka: a librdkafka KEY=VALUE (SASL, TLS; repeatable).")]
    = [],  # noqa: B006
    join_window: Annotated[float | None, typer.Option(
        help="Join impressions (kind column) with later clicks within this many seconds.")] = None,
    join_key: Annotated[str, typer.Option(help="--join-window: impression_id or user_id,item_id.")]
    = "user_id,item_id",
    offline_interval: Annotated[str | None, typer.Option(
        help="Retrain offline from the log every this much event time (e.g. 6h), in a thread.")] = None,
    fusion: Annotated[str, typer.Option(
        help="none; rebase (the online model takes each offline model); hedge (the server blends them).")]
    = "none",
    config: Annotated[Path | None, typer.Option(
        help="YAML configuration; its source, model, training, sync and serve sections replace the flags.")]
    = None,
    state: Annotated[Path, typer.Option(help="Log, checkpoints and registry; a rerun continues here.")]
    = Path("out/state"),
    model: Annotated[str, typer.Option(help=f"One of: {', '.join(MODELS)}.")] = "fm",
    dim: Annotated[int, typer.Option(help="Embedding width (FM factors).")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate (row-wise and dense Adagrad).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the model and the simulator.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 512,
    chunk: Annotated[int, typer.Option(help="replay: rows read at a time (checkpoints fall between).")] = 4096,
    checkpoint_events: Annotated[int, typer.Option(help="Events between checkpoints.")] = 20_000,
    limit: Annotated[int | None, typer.Option(help="replay: stop after N rows.")] = None,
    serve: Annotated[bool, typer.Option(help="Serve the model over HTTP while it learns.")] = True,
    port: Annotated[int, typer.Option(help="--serve: port on 127.0.0.1.")] = 8000,
    sync_interval: Annotated[float, typer.Option(help="Seconds between published deltas.")] = 1.0,
    fallback: Annotated[str | None, typer.Option(help="'simulator': replay it when the data is missing.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """The whole loop: source -> event log + online trainer -> deltas -> server, with checkpoints
    (a rerun on the same --state continues exactly where the last one stopped)."""
    if config is not None:
        return _run_config(config, state, limit, serve, fallback, as_json, quiet, debug)
    try:
        learner = _learner(model, dim, lr, seed)
        if fusion not in ("none", "rebase", "hedge"):
            raise UsageError(f"--fusion {fusion!r} is not none, rebase or hedge")
        offline = None if offline_interval is None else parse_duration(offline_interval)
        if source not in ("replay", "kafka") or batch_size <= 0 or chunk <= 0 or checkpoint_events <= 0:
            raise UsageError("--source is replay or kafka; --batch-size, --chunk, --checkpoint-events positive")
        if any("=" not in setting for setting in kafka_setting):
            raise UsageError("--kafka-setting takes KEY=VALUE")
        join = None if join_window is None else JoinConfig(window=join_window, key=tuple(join_key.split(",")))
        fmt, data, note = _resolve_data(fmt, data, fallback)
        if note:
            err.print(note, markup=False, highlight=False)
        kafka = KafkaOptions(bootstrap, topic, idle_timeout=idle_timeout,
                             settings=tuple(tuple(s.split("=", 1)) for s in kafka_setting))
        figures = _run(fmt, data, source, kafka, limit, chunk,
                       RunOptions(model, learner[1], state, batch_size, checkpoint_events, sync_interval, join=join,
                                  offline_interval=offline, fusion=fusion),
                       serve, port, quiet)
    except (UsageError, UnknownFormat, typer.BadParameter) as error:
        if debug:
            raise
        _fail(str(error), 2)
    except (FileNotFoundError, ValueError, FetchError, OSError, RuntimeError) as error:
        if debug:
            raise
        _fail(str(error), 1)
    _emit({**figures, "format": fmt, "source": source}, as_json, f"run {model}")


def _run_config(path: Path, state: Path, limit: int | None, serve: bool, fallback: str | None, as_json: bool,
                quiet: bool, debug: bool) -> None:
    """`freshrec run --config FILE`: every engine setting from the file (exit 2 naming bad keys)."""
    try:
        c = load_config(path)
        model_config = c.to_model_config()
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(2) from None
    try:
        fmt, data, note = _resolve_data(c.source.format, c.source.data, fallback)
        if note:
            err.print(note, markup=False, highlight=False)
        kafka = KafkaOptions(c.source.kafka.bootstrap, c.source.kafka.topic, c.source.kafka.group,
                             settings=tuple(c.source.kafka.settings.items()))
        t = c.training
        options = RunOptions(c.model.name, model_config, state, t.online_batch_size, t.checkpoint_events,
                             c.sync.sync_interval, offline_interval=t.offline_interval, offline_events=t.offline_events,
                             offline=OfflineConfig(epochs=t.epochs, holdout_fraction=t.holdout_fraction,
                                                   patience=t.patience, warm_start=t.warm_start),
                             fusion=c.fusion.strategy)
        kind = "kafka" if c.source.kind == "kafka" else "replay"
        figures = _run(fmt, data, kind, kafka, limit, c.source.chunk_rows, options, serve, c.serve.port, quiet)
    except (FileNotFoundError, ValueError, FetchError, OSError, RuntimeError) as error:
        if debug:
            raise
        _fail(str(error), 1)
    _emit({**figures, "format": fmt, "source": kind, "config": str(path)}, as_json, f"run {c.model.name}")


def _run(fmt: str, data: Path | None, source_kind: str, kafka: KafkaOptions, limit: int | None, chunk: int,
         options: RunOptions, serve: bool, port: int, quiet: bool) -> dict:
    letters = JsonlDeadLetters(options.state / "dead_letters.jsonl")
    source = open_source(fmt, data, letters, batch_size=chunk,
                         simulator=SimulatorConfig(seed=options.model_config.seed, batch_size=chunk,
                                                   total_events=limit or 1_000_000))
    if source_kind == "kafka":
        source = kafka_source(kafka, source.fields)
    elif limit is not None:
        source = LimitedSource(source, limit)
    server = None
    if serve:
        try:
            offline = options.state / "offline-registry" if options.fusion == "hedge" else None
            server = BackgroundServer(options.state / "registry", port, offline=offline)
            err.print(f"serving on http://127.0.0.1:{port} while it learns", markup=False, highlight=False)
        except OSError as error:
            err.print(f"not serving: {error}", markup=False, highlight=False)
    with Progress(TextColumn("{task.description}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=err, disable=quiet, transient=True) as bar:
        task = bar.add_task(f"run {source_kind} {fmt}", status="")
        show = None if quiet else _engine_progress(bar, task, getattr(source, "lag", None), server)
        figures = run(source, options, on_chunk=show)
    letters.close()
    if server is not None:
        figures["served_version"] = server.stop()
    figures["dead_letters"] = letters.total + (source.dead_letters.total if source_kind == "kafka" else 0)
    return figures


def _engine_progress(bar: Progress, task: TaskID, lag: Callable[[], int] | None,
                     server: BackgroundServer | None) -> Callable:
    """Events, events/s, consumer lag (Kafka), AUC over the recent window, model version,
    freshness (served), checkpoints; refreshed at most every half second."""
    shown = [0.0]

    def show(engine, summary: IngestSummary) -> None:
        now = time_module.monotonic()
        if now - shown[0] < 0.5:
            return
        shown[0] = now
        elapsed = max(bar.tasks[0].elapsed or 1e-9, 1e-9)
        window = engine.trainer.metrics.window()["auc"] if engine.trainer.batches else None
        version = engine.publisher.version if engine.publisher else None
        fresh = server.service.describe().get("freshness_s") if server is not None else None
        bar.update(task, status=f"{engine.events:,} events  {summary.rows / elapsed:,.0f}/s  "
                                + (f"lag {lag():,}  " if lag is not None else "")
                                + (f"AUC(window) {window:.4f}  " if window is not None else "")
                                + f"model v{version}  "
                                + (f"freshness p50 {fresh['p50']:.2f}s  " if fresh else "")
                                + f"checkpoints {engine.step}")
    return show


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


app.add_typer(config_app, name="config")
app.add_typer(evaluate_app, name="evaluate")


def main() -> None:
    """Entry point of the `freshrec` script."""
    app()


if __name__ == "__main__":
    main()
