"""`freshrec autoscale`: run a worker group whose size follows a metric (the policy of Kubernetes' HPA,
`freshrec.autoscale.policy`), or, with `--dry-run TRACE`, print what the policy would decide on a
recorded metric trace.

    freshrec autoscale --min-gpus 1 --max-gpus 16 --metric gpu_util --threshold 70%     # the article's
    freshrec autoscale --config kafka.yaml --min-workers 1 --max-workers 3 --metric lag --threshold 5000
    freshrec autoscale --metric lag --threshold 5000 --max-workers 3 --dry-run lag.csv  # tune it first

The local executor runs one torchrun agent per worker on this machine (c10d rendezvous) and serves the
group's registry while it learns; each change restarts the group from its last cut, resharded. Every
decision is a JSON line in `STATE/autoscale.jsonl` (`--decisions`) and Prometheus gauges
(`--metrics-port`). At the end: the group's figures, the sizes it went through, and its device-seconds
and cost by device class (`devices.classes`) beside a group held at `autoscale.max` all along.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import AUTOSCALE, ENGINE, MODEL, OFFLINE, PUBLISH, SERVING, SOURCE, build_config, overriding
from freshrec.cli.output import worker_class
from freshrec.config import FreshrecConfig, with_overrides

__all__ = ["autoscale_command"]


@guarded
@overriding(SOURCE, MODEL, OFFLINE, SERVING, PUBLISH, ENGINE, AUTOSCALE)
def autoscale_command(
    config: Annotated[Path | None, typer.Option(help="YAML configuration; each flag given overrides its key.")] = None,
    state: Annotated[Path, typer.Option(help="The group's state (as `freshrec run --workers`).")] = Path("out/state"),
    min_gpus: Annotated[int | None, typer.Option(help="Fewest GPUs (one worker each; sets gpu.autoscale).")] = None,
    max_gpus: Annotated[int | None, typer.Option(help="Most GPUs (one worker each; sets gpu.autoscale).")] = None,
    dry_run: Annotated[Path | None, typer.Option(
        "--dry-run", help="A recorded metric trace (CSV t,value[,workers] or JSON lines): print the decisions "
                          "the policy would take, run nothing.")] = None,
    start: Annotated[int | None, typer.Option(help="--dry-run: the group's size at the start (default: the "
                                                   "trace's first workers, else autoscale.min).")] = None,
    decisions: Annotated[Path | None, typer.Option(help="JSON lines of the decisions (default STATE/autoscale.jsonl; "
                                                        "--dry-run: none).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve the decisions' Prometheus gauges on this port.")]
    = None,
    exit_at_end: Annotated[bool, typer.Option(
        "--exit-at-end", help="Stop when the group's stream ends, server included. Otherwise the server goes on "
                              "until Ctrl-C or SIGTERM.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Scale the trainer group on a metric (HPA's policy); `--dry-run TRACE` to see its decisions first."""
    from freshrec.cli.output import emit

    overrides = dict(overrides or {})
    if min_gpus is not None or max_gpus is not None:
        overrides["gpu.autoscale"] = True
        overrides.update({k: v for k, v in (("autoscale.min", min_gpus), ("autoscale.max", max_gpus)) if v is not None})
    settings = build_config(config, overrides)
    if settings.gpu.autoscale and settings.gpu.count == 0:
        settings = with_overrides(settings, {"gpu.count": 1})   # each worker learns on a GPU (one each)
    if problems := settings.problems():
        raise UsageError("; ".join(problems))
    if dry_run is not None:
        emit(_dry_run(settings, dry_run, start), as_json, "autoscale --dry-run")
        return
    figures = _live(settings, state, decisions or state / "autoscale.jsonl", metrics_port, exit_at_end)
    emit(figures, as_json, f"autoscale {settings.autoscale.metric}")


def _dry_run(settings: FreshrecConfig, trace: Path, start: int | None) -> dict:
    """Each decision on the trace (a line on stderr), then a summary: the sizes the group would go
    through and what its device-time would cost beside a group held at the maximum (`cost`)."""
    from freshrec.autoscale.cost import GroupClock, run_cost
    from freshrec.autoscale.policy import Policy
    from freshrec.autoscale.trace import dry_run, read_trace
    from freshrec.cli.output import note

    try:
        samples = read_trace(trace)
    except (OSError, ValueError) as error:
        raise UsageError(f"--dry-run {trace}: {error}") from None
    policy = Policy.from_section(settings.autoscale)
    taken = dry_run(policy, samples, start)
    if not taken:
        raise UsageError(f"--dry-run {trace}: the trace holds no reading")
    clock = GroupClock()
    clock.changed(taken[0].time, taken[0].current)
    for decision in taken:
        note(f"t={decision.time:>9,.1f}s  {decision.current} -> {decision.desired}  {decision.reason}")
        if decision.changed:
            clock.changed(decision.time, decision.desired)
    clock.close(taken[-1].time)
    sizes = [taken[0].current] + [d.desired for d in taken if d.changed]
    on_gpu = settings.gpu.count >= 1 and settings.gpu.type != "none"
    return {"metric": policy.metric, "readings": len(taken), "changes": len(sizes) - 1, "sizes": sizes,
            "final": sizes[-1], "mean_workers": clock.device_seconds / clock.elapsed if clock.elapsed else None,
            "cost": run_cost(settings, settings.gpu.type if on_gpu else "CPU", clock, peak=policy.max)}


def _live(settings: FreshrecConfig, state: Path, decisions: Path, metrics_port: int | None, exit_at_end: bool) -> dict:
    """The group, its server and the controller; their figures once the stream ends (the server goes on
    until SIGINT/SIGTERM unless `exit_at_end`) or on SIGINT/SIGTERM."""
    from freshrec.autoscale.controller import Controller
    from freshrec.autoscale.cost import GroupClock, run_cost
    from freshrec.autoscale.decisions import DecisionLog
    from freshrec.autoscale.metrics import metric_reader
    from freshrec.autoscale.policy import Autoscaler, Policy
    from freshrec.cli.output import note
    from freshrec.cluster.launch import group_figures

    a, s = settings.autoscale, settings.serve
    if a.executor == "local" and (problems := settings.group_problems()):
        raise UsageError("; ".join(problems))
    servers = list(a.servers) or ([s.url()] if s.enabled and a.executor == "local" else [])
    try:
        reader = metric_reader(settings, state, servers)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from None
    try:
        executor, server = _executor(settings, state), None
    except ValueError as error:   # the gpu block and this machine's GPUs (placement)
        raise UsageError(str(error)) from None
    log, clock = DecisionLog(decisions), GroupClock()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=s.host, registry=log.registry)
    stop = threading.Event()
    previous = {n: signal.signal(n, lambda *_: stop.set()) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = _serve(settings, state) if a.executor == "local" and s.enabled else None
        first = min(max(executor.current() or settings.training.workers, a.min), a.max)   # a restarted autoscaler
        # on Kubernetes keeps the StatefulSet's size
        controller = Controller(Autoscaler(Policy.from_section(a)), reader, executor, log, on_change=clock.changed)
        executor.scale(first)
        clock.changed(controller.clock(), first)
        note(f"autoscale: {first} worker(s), {a.min}..{a.max} on {a.metric} (threshold {a.threshold:g}); "
             f"decisions in {decisions}")
        code = controller.run(stop)
        clock.close(controller.clock())
        if code == 0 and server is not None and not exit_at_end:
            server.service.sync()   # the group's last version
            note(f"the stream has ended; still serving on {s.url()}; Ctrl-C (or SIGTERM) stops it.")
            stop.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        executor.close()
        served = server.stop() if server is not None else None
        log.close()
        if hasattr(reader, "close"):
            reader.close()
    if code not in (None, 0):   # only a local group ends; a Kubernetes one never does
        raise RuntimeError(f"the worker group failed (exit {code}); the agents' output is in {state / 'agents'}; "
                           f"{executor.failure}")
    # written by rank 0 once the stream ended (a signal may come after); a Kubernetes group never ends
    group = (group_figures(state) or {}) if a.executor == "local" else {}
    return {**group, "ended": "stream" if group else "signal", "sizes": controller.sizes,
            "decisions": controller.decisions, "served_version": served,
            "cost": run_cost(settings, worker_class(settings), clock, peak=a.max)}


def _executor(settings: FreshrecConfig, state: Path):
    a = settings.autoscale
    if a.executor == "kubernetes":
        from freshrec.autoscale.kubernetes import KubernetesExecutor

        return KubernetesExecutor(a.name, a.namespace)
    from freshrec.autoscale.local import LocalExecutor
    from freshrec.autoscale.placement import agent_gpus
    from freshrec.devices import machine_devices

    gpus = agent_gpus(settings, *machine_devices())   # the hot class's, NVLinked ones together; [] on the CPU
    return LocalExecutor(settings, state, (a.min, a.max), host=settings.serve.host, gpus=[str(g) for g in gpus])


def _serve(settings: FreshrecConfig, state: Path):
    """The group's registry served while it learns (as `freshrec run --workers` does)."""
    from freshrec.cli.serve import check_port
    from freshrec.engine.build import serve_config
    from freshrec.serve.background import BackgroundServer

    s = settings.serve
    check_port(s.host, s.port)
    return BackgroundServer(state / "registry", s.port, s.host, config=serve_config(settings))
