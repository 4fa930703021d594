"""`freshrec evaluate ab`: daily retraining vs online vs hybrid on the same time-ordered stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import MODEL, OFFLINE, SOURCE, build_config, overriding
from freshrec.cli.replay import READ_ROWS
from freshrec.config import FreshrecConfig, parse_duration

__all__ = ["evaluate_app"]

evaluate_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Replay experiments.")
OFFLINE_BATCH = 2048
"""Rows per offline training step in the A/B arms."""


@evaluate_app.command("ab")
@guarded
@overriding(SOURCE, MODEL, OFFLINE)
def evaluate_ab(
    arms: Annotated[str, typer.Option(help="Comma-separated: daily, hourly, online, hybrid.")] = "daily,online,hybrid",
    report: Annotated[Path | None, typer.Option(help="Write index.html (plots, table) and figures.json here.")]
    = None,
    day: Annotated[str, typer.Option(help="The daily arm's period (event time).")] = "1d",
    offline_window: Annotated[str, typer.Option(help="hybrid: data the offline model learns ('all' or 7d).")] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Daily retraining vs online vs hybrid on the same time-ordered stream, each prequential."""
    from freshrec.cli.output import emit
    from freshrec.engine.build import resolve_data

    settings = build_config(None, overrides or {})
    config = _ab_config(settings, arms, day, offline_window)
    settings, found = resolve_data(settings)
    started = time.perf_counter()
    result, page = _replay_ab(settings, config, report)
    figures = result.figures()
    summary = {"format": settings.source.format, "data": str(settings.source.data) if settings.source.data else None,
               "note": found or None, "seconds": time.perf_counter() - started,
               "report": str(page) if page else None,
               "arms": {n: {k: v for k, v in f.items() if k not in ("windows", "gap")} | {"windows": len(f["windows"])}
                        for n, f in figures.items()}}
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        emit({f"{n}.{k}": v for n, f in summary["arms"].items() for k, v in f.items()}, False, "replay A/B")


def _ab_config(settings: FreshrecConfig, arms: str, day: str, offline_window: str):
    """The experiment's `ABConfig` from the configuration and the A/B options (`UsageError` if bad)."""
    from dataclasses import replace

    from freshrec.engine.build import model_config, offline_config
    from freshrec.evaluate import ABConfig

    interval = settings.training.offline_interval
    try:
        if interval is None:
            raise ValueError("--offline-interval: the hybrid arm needs one")
        return ABConfig(arms=tuple(a.strip() for a in arms.split(",") if a.strip()), model=settings.model.name,
                        model_config=model_config(settings), day=parse_duration(day),
                        offline_interval=interval,
                        offline_window=None if offline_window == "all" else parse_duration(offline_window),
                        offline=replace(offline_config(settings), batch_size=OFFLINE_BATCH),
                        fusion=settings.fusion.strategy)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _replay_ab(settings: FreshrecConfig, config, report: Path | None):
    """Read the stream into chunks cut into micro-batches and replay the arms over them; (result,
    report page or None)."""
    from freshrec.engine.build import feature_specs, open_stream
    from freshrec.engine.loop import featurised
    from freshrec.evaluate import replay_ab, write_report
    from freshrec.events.deadletter import MemoryDeadLetters
    from freshrec.features import FeaturePipeline

    letters = MemoryDeadLetters()
    source = open_stream(settings, letters, READ_ROWS)
    specs = feature_specs(settings, source.fields)
    pipeline = FeaturePipeline(specs, settings.features.target)
    size = settings.training.online_batch_size
    units = list(featurised(source, pipeline, size, batch_window=settings.training.online_batch_window))
    if not units:
        raise RuntimeError(f"the stream is empty ({letters.total:,} records rejected)")
    result = replay_ab(units, specs, config)
    title = f"Replay A/B: {settings.source.format}"
    return result, write_report(result, report, title=title) if report is not None else None
