"""The `freshrec serve` and `freshrec run` commands: a server alone on a registry, and the whole
engine (source -> log + online trainer -> deltas -> server, checkpoints, offline retraining)."""

from __future__ import annotations

import os
import sys
import time as time_module
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn

from freshrec.cli_common import UsageError, emit, err, fail, model_options, resolve_data
from freshrec.config import ConfigError, load_config, parse_duration
from freshrec.engine import IngestSummary
from freshrec.engine.run import KafkaOptions, RunOptions, kafka_source, run
from freshrec.engine.serving import serve_until_signal
from freshrec.events.datasets import UnknownFormat, open_source
from freshrec.events.datasets.fetch import FetchError
from freshrec.events.deadletter import JsonlDeadLetters
from freshrec.events.live import LiveQueue, WithLive
from freshrec.events.simulator import SimulatorConfig
from freshrec.events.source import LimitedSource, Source
from freshrec.join import JoinConfig
from freshrec.models import MODELS
from freshrec.serve import ModelService, ServeConfig, create_app
from freshrec.serve.background import ADMIN_TOKEN_ENV, BackgroundServer
from freshrec.snapshot import ModelRegistry
from freshrec.train.offline import OfflineConfig

__all__ = ["run_command", "serve_command"]

_JSON = "-H 'content-type: application/json' -d"


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
        fail(str(error), 2)
    except OSError as error:
        if debug:
            raise
        fail(str(error), 1)


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
    serve: Annotated[bool, typer.Option(
        help="Serve the model over HTTP while it learns, and after the stream ends: it goes on learning "
             "from POST /events until Ctrl-C or SIGTERM.")] = True,
    exit_at_end: Annotated[bool, typer.Option(
        "--exit-at-end", help="Stop when the stream ends, server included (for scripts; --no-serve always does).")]
    = False,
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
        return _run_config(config, state, limit, serve, exit_at_end, fallback, as_json, quiet, debug)
    try:
        learner = model_options(model, dim, lr, seed)
        if fusion not in ("none", "rebase", "hedge"):
            raise UsageError(f"--fusion {fusion!r} is not none, rebase or hedge")
        offline = None if offline_interval is None else parse_duration(offline_interval)
        if source not in ("replay", "kafka") or batch_size <= 0 or chunk <= 0 or checkpoint_events <= 0:
            raise UsageError("--source is replay or kafka; --batch-size, --chunk, --checkpoint-events positive")
        if any("=" not in setting for setting in kafka_setting):
            raise UsageError("--kafka-setting takes KEY=VALUE")
        join = None if join_window is None else JoinConfig(window=join_window, key=tuple(join_key.split(",")))
        fmt, data, note = resolve_data(fmt, data, fallback)
        if note:
            err.print(note, markup=False, highlight=False)
        kafka = KafkaOptions(bootstrap, topic, idle_timeout=idle_timeout,
                             settings=tuple(tuple(s.split("=", 1)) for s in kafka_setting))
        figures = _run(fmt, data, source, kafka, limit, chunk,
                       RunOptions(model, learner[1], state, batch_size, checkpoint_events, sync_interval, join=join,
                                  offline_interval=offline, fusion=fusion),
                       serve, port, quiet, exit_at_end)
    except (UsageError, UnknownFormat, typer.BadParameter) as error:
        if debug:
            raise
        fail(str(error), 2)
    except (FileNotFoundError, ValueError, FetchError, OSError, RuntimeError) as error:
        if debug:
            raise
        fail(str(error), 1)
    emit({**figures, "format": fmt, "source": source}, as_json, f"run {model}")


def _run_config(path: Path, state: Path, limit: int | None, serve: bool, exit_at_end: bool, fallback: str | None,
                as_json: bool, quiet: bool, debug: bool) -> None:
    """`freshrec run --config FILE`: every engine setting from the file (exit 2 naming bad keys)."""
    try:
        c = load_config(path)
        model_config = c.to_model_config()
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(2) from None
    try:
        fmt, data, note = resolve_data(c.source.format, c.source.data, fallback)
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
        figures = _run(fmt, data, kind, kafka, limit, c.source.chunk_rows, options, serve, c.serve.port, quiet,
                       exit_at_end)
    except (FileNotFoundError, ValueError, FetchError, OSError, RuntimeError) as error:
        if debug:
            raise
        fail(str(error), 1)
    emit({**figures, "format": fmt, "source": kind, "config": str(path)}, as_json, f"run {c.model.name}")


def _run(fmt: str, data: Path | None, source_kind: str, kafka: KafkaOptions, limit: int | None, chunk: int,
         options: RunOptions, serve: bool, port: int, quiet: bool, exit_at_end: bool) -> dict:
    """Open the source, serve (with the live events of POST /events joined to the stream) unless
    `serve` is False, run the engine; the figures."""
    letters = JsonlDeadLetters(options.state / "dead_letters.jsonl")
    source = open_source(fmt, data, letters, batch_size=chunk,
                         simulator=SimulatorConfig(seed=options.model_config.seed, batch_size=chunk,
                                                   total_events=limit or 1_000_000))
    if source_kind == "kafka":
        source = kafka_source(kafka, source.fields)
    elif limit is not None:
        source = LimitedSource(source, limit)
    stream = source
    source, server = _serve(stream, options, port, exit_at_end) if serve else (stream, None)
    with Progress(TextColumn("{task.description}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=err, disable=quiet, transient=True) as bar:
        task = bar.add_task(f"run {source_kind} {fmt}", status="")
        show = None if quiet else _engine_progress(bar, task, getattr(stream, "lag", None), server)
        figures = run(source, options, on_chunk=show)
    letters.close()
    if server is not None:
        figures["served_version"] = server.stop()
    figures["dead_letters"] = letters.total + (stream.dead_letters.total if source_kind == "kafka" else 0)
    return figures


def _serve(stream: Source, options: RunOptions, port: int,
           exit_at_end: bool) -> tuple[Source, BackgroundServer | None]:
    """Start the server in a thread and say what to try on it; the source to run: `stream` with the
    events of POST /events joined to it (and, unless `exit_at_end`, going on after it ends). With a
    joiner, POST /events answers 503: the joiner keeps rows of the stream's types, not live ones."""
    live = LiveQueue(stream.fields)
    sink = live if options.join is None else None
    try:
        offline = options.state / "offline-registry" if options.fusion == "hedge" else None
        server = BackgroundServer(options.state / "registry", port, offline=offline, sink=sink)
    except OSError as error:
        _say(f"not serving: {error}")
        return stream, None
    _say(_requests_to_try(port))
    on_end = None if exit_at_end else lambda: _say(_still_serving(port, learns=sink is not None))
    return WithLive(stream, live, follow=not exit_at_end, on_end=on_end), server


def _say(text: str) -> None:
    """A message on stderr, as written (long lines unbroken: they are commands to copy)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _requests_to_try(port: int) -> str:
    """What `run` prints when its server is up: the address and three requests to try on it."""
    url = f"http://127.0.0.1:{port}"
    return (f"serving on {url} while it learns; try:\n"
            f"  curl -s {url}/predict {_JSON} '{{\"user\": 1, \"candidates\": [1, 2, 3]}}'\n"
            f"  curl -s {url}/recommend {_JSON} '{{\"user\": 1, \"k\": 10}}'\n"
            f"  curl -s {url}/metrics")


def _still_serving(port: int, learns: bool) -> str:
    """What `run` prints when the stream ends and it goes on serving (`learns`: from POST /events)."""
    url = f"http://127.0.0.1:{port}"
    if not learns:
        return f"the stream has ended; still serving on {url}; Ctrl-C (or SIGTERM) stops it."
    return (f"the stream has ended; still serving on {url} and learning from the events posted to it:\n"
            f"  curl -s {url}/events {_JSON} '{{\"user\": 1, \"item\": 2, \"label\": 1}}'\n"
            "Ctrl-C (or SIGTERM) stops it.")


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
