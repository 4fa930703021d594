"""`freshrec run`: the whole loop (source -> event log + online trainer -> deltas -> server, with
checkpoints and offline retraining), every setting from one `FreshrecConfig`: the `--config` file
or the defaults, overridden by the flags given.

`--limit N` counts events from the start of the stream, across reruns on the same `--state` (so a
run killed and started again stops where an uninterrupted one would): a rerun continues up to N,
and says so when the state already holds N events.

While it serves (`serve.enabled`, the default) it says which requests to try; `POST /events` feeds
the same loop between the stream's chunks (`WithLive`), and when the stream ends the server and the
live learning go on until SIGINT/SIGTERM (`--exit-at-end`: stop at the stream's end instead). The
posted events are durable before they are acknowledged (the live journal, `STATE/live`); checkpoints
hold the journal row learned up to, so a rerun after a crash learns the events no checkpoint
covered, once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import ENGINE, MODEL, OFFLINE, PUBLISH, SERVING, SOURCE, build_config, overriding
from freshrec.config import FreshrecConfig, show_config

__all__ = ["run_command"]


@guarded
@overriding(SOURCE, MODEL, OFFLINE, SERVING, PUBLISH, ENGINE)
def run_command(
    config: Annotated[Path | None, typer.Option(help="YAML configuration (see `freshrec config show`); "
                                                     "each flag given overrides its key.")] = None,
    state: Annotated[Path, typer.Option(help="Log, checkpoints, registry and the journal of posted events; "
                                             "a rerun continues here.")]
    = Path("out/state"),
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the configuration the run would "
                                                                      "use, then exit.")] = False,
    exit_at_end: Annotated[bool, typer.Option(
        "--exit-at-end", help="Stop when the stream ends, server included (for scripts; without a server it "
                              "always does). Otherwise it goes on serving and learning from POST /events "
                              "until Ctrl-C or SIGTERM.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """The whole loop: source -> event log + online trainer -> deltas -> server, with checkpoints
    (a rerun on the same --state continues exactly where the last one stopped)."""
    settings = build_config(config, overrides or {})
    if print_config:
        typer.echo(show_config(settings), nl=False)
        return
    import torch

    from freshrec.cli.output import emit, note
    from freshrec.cli.serve import check_port
    from freshrec.cluster.group import in_launched_group
    from freshrec.engine.build import gpu_note, resolve_data

    if in_launched_group() or settings.training.workers > 1:
        _run_group(settings, state, as_json, exit_at_end)
        return
    if (state / "cuts").is_dir():
        raise UsageError(f"--state {state} holds a worker group's run: go on with --workers N (any N: the tables "
                         "are resharded), or give another --state")
    settings, found = resolve_data(settings)
    gpu = gpu_note(settings, torch.cuda.is_available())
    for line in (found, gpu):
        if line:
            note(line)
    if settings.serve.enabled:
        check_port(settings.serve.host, settings.serve.port)
    started = time.monotonic()
    figures = _run(settings, state, quiet, exit_at_end)
    _say_why_nothing_was_learned(figures, settings, state)
    s = settings.source
    emit({**figures, "format": s.format, "source": s.kind, "config": str(config) if config else None,
          "gpu": gpu, "cost": _cost(settings, 1, started)}, as_json, f"run {settings.model.name}")


def _run_group(settings: FreshrecConfig, state: Path, as_json: bool, exit_at_end: bool) -> None:
    """A worker group: this process is one of its ranks (under torchrun), or launches it
    (`--workers N`), serves the group's registry while it learns (`serve.enabled`) and prints the
    group's figures."""
    import torch

    from freshrec.cli.output import emit, note
    from freshrec.cli.serve import check_port
    from freshrec.cluster.group import in_launched_group
    from freshrec.cluster.launch import launch_group
    from freshrec.cluster.worker import run_rank
    from freshrec.engine.build import gpu_note, serve_config, worker_device
    from freshrec.serve.background import BackgroundServer

    if problems := settings.group_problems():
        raise UsageError("; ".join(problems))
    if in_launched_group():
        if settings.serve.enabled:   # under your own torchrun (a launcher gives its ranks --no-serve)
            raise UsageError(f"--serve (serve.enabled): the ranks of a group do not serve; add --no-serve and serve "
                             f"the group's versions with `freshrec serve --registry {state / 'registry'}`")
        run_rank(settings, state)
        _end_rank()
    if (state / "checkpoints").is_dir() and any((state / "checkpoints").iterdir()):
        raise UsageError(f"--state {state} holds a one-process run's checkpoints (a worker group does not go on "
                         "from them): give the group another --state")
    worker_device(settings, settings.training.workers - 1, torch.cuda.device_count())   # a GPU for each worker
    if gpu := gpu_note(settings, torch.cuda.is_available()):
        note(gpu)
    server, s, started = None, settings.serve, time.monotonic()
    if s.enabled:
        check_port(s.host, s.port)
        server = BackgroundServer(state / "registry", s.port, s.host, config=serve_config(settings))
        note(_requests_to_try(s.url()))
    try:
        figures = launch_group(settings, state)
        if server is not None:
            server.service.sync()   # the group's last version
            if not exit_at_end:
                note(_still_serving(s.url(), learns=False))
                _wait_for_signal()
    finally:
        served = server.stop() if server is not None else None
    emit({**figures, "served_version": served, "format": settings.source.format, "source": settings.source.kind,
          "cost": _cost(settings, settings.training.workers, started)},
         as_json, f"run {settings.model.name} on {settings.training.workers} workers")


def _cost(settings: FreshrecConfig, workers: int, started: float) -> dict:
    """The run's device-seconds and their estimated cost (`devices.classes`), `workers` since `started`."""
    from freshrec.autoscale.cost import GroupClock, run_cost
    from freshrec.cli.output import worker_class

    clock = GroupClock()
    clock.changed(started, workers)
    clock.close(time.monotonic())
    return run_cost(settings, worker_class(settings), clock)


def _end_rank() -> None:
    """End this rank's process now that its run is durable and the group is left: output flushed,
    then out without the interpreter's teardown. There a native library's thread object, destroyed
    while still joinable, may abort the process ("terminate called without an active exception":
    seen about once in 60 runs of 2 ranks on a loaded machine), and torchrun would then restart the
    whole group for nothing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _wait_for_signal() -> None:
    """Until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run(settings: FreshrecConfig, state: Path, quiet: bool, exit_at_end: bool) -> dict:
    """Open the stream (and the server, with the live events joined to the stream), run the engine
    with a progress bar, return its figures."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from freshrec.cli.output import err, note
    from freshrec.engine.build import item_content_of, open_stream, serve_config
    from freshrec.engine.dataflow import RETRIEVAL_REGISTRY
    from freshrec.engine.run import run as run_engine
    from freshrec.events.deadletter import JsonlDeadLetters
    from freshrec.events.live import LiveQueue
    from freshrec.events.with_live import WithLive

    quiet = quiet or not err.is_terminal   # a bar only on a terminal
    state.mkdir(parents=True, exist_ok=True)
    letters = JsonlDeadLetters(state / "dead_letters.jsonl")
    stream = open_stream(settings, letters)
    source, server, s = stream, None, settings.serve
    content = item_content_of(settings)   # built once, for the server and the engine
    if s.enabled:
        from freshrec.serve.background import BackgroundServer  # the HTTP stack, only to serve

        offline = state / "offline-registry" if settings.fusion.strategy == "hedge" else None
        joined = settings.join.window is not None   # the joiner keeps the stream's column types: no sink
        live = LiveQueue(stream.fields, journal=None if joined else state / "live")
        sink = None if joined else live
        retrieval = state / RETRIEVAL_REGISTRY if settings.retrieval.enabled else None
        server = BackgroundServer(state / "registry", s.port, s.host, offline=offline, config=serve_config(settings),
                                  sink=sink, retrieval=retrieval, content=content)
        url = s.url()
        note(_requests_to_try(url))
    watch = _watch(settings, stream, letters, server)
    if s.enabled:
        def on_end() -> None:
            watch.ended()
            if not exit_at_end:
                note(_still_serving(url, learns=sink is not None))
        source = WithLive(stream, live, follow=not exit_at_end, on_end=on_end)
    with Progress(TextColumn("{task.description}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=err, disable=quiet, transient=True) as bar:
        task = bar.add_task(f"run {settings.source.kind} {settings.source.format}", status="")
        show = None if quiet else _progress(lambda status: bar.update(task, status=status),
                                            getattr(stream, "lag", None), server)

        def on_chunk(engine, summary) -> None:
            watch.on_chunk(engine, summary)
            if show is not None:
                show(engine, summary)
        watch.start()
        try:
            figures = run_engine(source, settings, state, on_chunk=on_chunk, content=content)
        finally:
            watch.stop()
            letters.close()
            served = server.stop() if server is not None else None
    figures["served_version"] = served
    kafka = stream.dead_letters.total if settings.source.kind == "kafka" else 0
    figures["dead_letters"] = letters.total + kafka
    figures["alerts_firing"] = watch.alerts.firing()
    return figures


def _watch(settings: FreshrecConfig, stream, letters, server):
    """The alerts of `settings.alerts` on this run: the served model's age from `server`, the dead
    letters of `letters` (and of a Kafka stream's), events waiting: Kafka's lag, else until the
    stream ends."""
    from collections import Counter

    from freshrec.engine.watch import LoopWatch
    from freshrec.metrics.alerts import Alerts, PageHinkley

    a, kafka = settings.alerts, settings.source.kind == "kafka"
    alerts = Alerts(a.staleness, a.stalled, a.auc_drop, a.dead_letter_rate, a.webhook)
    drift = PageHinkley(a.drift_delta, a.drift_threshold) if a.drift_threshold is not None else None
    age = (lambda: server.service.describe().get("age_s")) if server is not None else (lambda: None)
    return LoopWatch(alerts, age, lambda: letters.counts + (stream.dead_letters.counts if kafka else Counter()),
                     waiting=(lambda: stream.lag() > 0) if kafka else None, drift=drift)


_JSON = "-H 'content-type: application/json' -d"


def _requests_to_try(url: str) -> str:
    """What `run` prints when its server is up: the address and three requests to try on it."""
    return (f"serving on {url} while it learns; try:\n"
            f"  curl -s {url}/predict {_JSON} '{{\"user\": 1, \"candidates\": [1, 2, 3]}}'\n"
            f"  curl -s {url}/recommend {_JSON} '{{\"user\": 1, \"k\": 10}}'\n"
            f"  curl -s {url}/metrics")


def _still_serving(url: str, learns: bool) -> str:
    """What `run` prints when the stream ends and it goes on serving (`learns`: from POST /events)."""
    if not learns:
        return f"the stream has ended; still serving on {url}; Ctrl-C (or SIGTERM) stops it."
    return (f"the stream has ended; still serving on {url} and learning from the events posted to it:\n"
            f"  curl -s {url}/events {_JSON} '{{\"user\": 1, \"item\": 2, \"label\": 1}}'\n"
            "Ctrl-C (or SIGTERM) stops it.")


def _say_why_nothing_was_learned(figures: dict, settings: FreshrecConfig, state: Path) -> None:
    """A run that learned nothing says why: every record rejected (exit 1), or nothing left after
    the checkpoint it continued from (a note; exit 0)."""
    from freshrec.cli.output import note

    if figures["rows"]:
        return
    if figures["dead_letters"] and figures["restored_from"] is None:
        raise RuntimeError(f"every record was rejected ({figures['dead_letters']:,} dead letters in "
                           f"{state / 'dead_letters.jsonl'}): nothing to learn")
    if figures["restored_from"] is not None:
        limit = settings.source.limit
        why = (f"--limit {limit:,} counts events from the start of the stream: raise it to go on"
               if limit is not None and figures["events"] >= limit else "the stream has no more events")
        note(f"nothing new: the state in {state} already holds {figures['events']:,} events ({why})")


def _progress(update: Callable[[str], None], lag: Callable[[], int] | None, server) -> Callable:
    """Events, events/s, consumer lag (Kafka), AUC over the recent window, model version,
    freshness (served), checkpoints; refreshed at most every half second."""
    shown, started = [0.0], time.monotonic()

    def show(engine, summary) -> None:
        now = time.monotonic()
        if now - shown[0] < 0.5:
            return
        shown[0] = now
        window = engine.trainer.metrics.window()["auc"] if engine.trainer.batches else None
        version = engine.publisher.version if engine.publisher else None
        fresh = server.service.describe().get("freshness_s") if server is not None else None
        update(f"{engine.events:,} events  {summary.rows / max(now - started, 1e-9):,.0f}/s  "
               + (f"lag {lag():,}  " if lag is not None else "")
               + (f"AUC(window) {window:.4f}  " if window is not None else "")
               + f"model v{version}  "
               + (f"freshness p50 {fresh['p50']:.2f}s  " if fresh else "")
               + f"checkpoints {engine.step}")
    return show
