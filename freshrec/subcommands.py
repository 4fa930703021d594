"""The `freshrec config` and `freshrec evaluate` sub-commands (the others are in `freshrec.cli`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from freshrec.cli_common import UsageError, emit, fail, model_options, resolve_data
from freshrec.config import ConfigError, FreshrecConfig, load_config, parse_duration, show_config

config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check or show a YAML configuration.")
evaluate_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Replay experiments.")


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="The YAML file.")]) -> None:
    """Validate FILE: exit 0 and 'ok', or exit 2 with one line per problem (key path, value, allowed)."""
    try:
        load_config(path)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(2) from None
    typer.echo(f"{path}: ok")


@config_app.command("show")
def config_show(path: Annotated[Path | None, typer.Argument(help="The YAML file (none: the defaults).")] = None
                ) -> None:
    """Print the effective configuration, defaults filled in, as YAML with a comment per field."""
    try:
        config = load_config(path) if path is not None else FreshrecConfig()
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(2) from None
    typer.echo(show_config(config), nl=False)


@evaluate_app.command("ab")
def evaluate_ab(
    fmt: Annotated[str, typer.Option("--format", help="The data set's format.")] = "movielens-100k",
    data: Annotated[Path | None, typer.Option(help="File or folder to replay.")] = None,
    arms: Annotated[str, typer.Option(help="Comma-separated: daily, hourly, online, hybrid.")] = "daily,online,hybrid",
    report: Annotated[Path | None, typer.Option(help="Write index.html (plots, table) and figures.json here.")]
    = None,
    model: Annotated[str, typer.Option(help="lr, fm, deepfm or dcn.")] = "fm",
    dim: Annotated[int, typer.Option(help="Embedding width.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per online micro-batch.")] = 512,
    day: Annotated[str, typer.Option(help="The daily arm's period (event time).")] = "1d",
    offline_interval: Annotated[str, typer.Option(help="hybrid: event time between offline retrainings.")] = "6h",
    offline_window: Annotated[str, typer.Option(help="hybrid: data the offline model learns ('all' or 7d).")] = "7d",
    epochs: Annotated[int, typer.Option(help="Offline training epochs (early stopping on a later slice).")] = 2,
    fusion: Annotated[str, typer.Option(help="hybrid: hedge or rebase.")] = "hedge",
    limit: Annotated[int | None, typer.Option(help="Stop after N events.")] = None,
    fallback: Annotated[str | None, typer.Option(help="'simulator': replay it when the data is missing.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """Daily retraining vs online vs hybrid on the same time-ordered stream, each prequential."""
    from freshrec.evaluate import ABConfig, replay_ab, write_report
    from freshrec.events.datasets import FORMATS, open_source
    from freshrec.events.deadletter import MemoryDeadLetters
    from freshrec.events.source import LimitedSource
    from freshrec.features import FeaturePipeline, default_specs
    from freshrec.train.offline import OfflineConfig

    try:  # the options: a bad one is a usage error (2)
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
        name, shared = model_options(model, dim, lr, seed)
        config = ABConfig(arms=tuple(a.strip() for a in arms.split(",") if a.strip()), model=name,
                          model_config=shared, day=parse_duration(day),
                          offline_interval=parse_duration(offline_interval),
                          offline_window=None if offline_window == "all" else parse_duration(offline_window),
                          offline=OfflineConfig(epochs=epochs, batch_size=2048), fusion=fusion)
    except (UsageError, ValueError) as error:
        if debug:
            raise
        fail(str(error), 2)
    try:  # the run: a failure is a runtime error (1)
        fmt, data, note = resolve_data(fmt, data, fallback)
        source = open_source(fmt, data, MemoryDeadLetters())
        source = LimitedSource(source, limit) if limit is not None else source
        specs = default_specs(source.fields, dim=dim)
        pipeline = FeaturePipeline(specs)
        batches = [b for chunk in source if len(chunk) for b in pipeline.build(chunk).split(batch_size)]
        if not batches:
            raise ValueError("the stream is empty")
        started = time.perf_counter()
        result = replay_ab(batches, specs, config)
        figures = result.figures()
        page = write_report(result, report, title=f"Replay A/B: {fmt}") if report is not None else None
    except (FileNotFoundError, OSError, ValueError) as error:
        if debug:
            raise
        fail(str(error), 1)
    summary = {"format": fmt, "data": str(data) if data else None, "note": note or None,
               "seconds": time.perf_counter() - started, "report": str(page) if page else None,
               "arms": {n: {k: v for k, v in f.items() if k != "per_day"} | {"days": len(f["per_day"])}
                        for n, f in figures.items()}}
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        emit({f"{n}.{k}": v for n, f in summary["arms"].items() for k, v in f.items()}, False, "replay A/B")
