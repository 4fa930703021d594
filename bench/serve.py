"""Serving benchmark: latency of /predict (100 candidates) and /recommend (k=10) at a fixed
request rate while the trainer publishes a delta every second, and end-to-end freshness.

Three processes on this machine, pinned: the server alone on the last core, the trainer and the
driver on the others (on 2 cores: one each side), so that the figures measure the server, not the
scheduler:
- the trainer (`--role trainer`): the simulator's stream paced at `--events-per-s`, an FM (dim 16)
  learning online, publishing a delta every `--sync-interval` s and a full snapshot every
  `--full-interval` s (by default `freshrec run`'s, 300 s) to a fresh registry;
- the server: `freshrec serve --registry ...` (uvicorn, one worker, torch on one thread);
- the driver (this process): open-loop load over keep-alive HTTP/1.1 connections, requests sent
  on a fixed schedule (`--rate` /predict per s plus `--recommend-rate` /recommend per s); each
  latency is measured from the request's scheduled time, so a stalled server is charged for the
  requests queued behind it (no coordinated omission).

Prints one JSON line: p50/p99 latency per endpoint, achieved requests/s, failed requests, swaps
applied (delta and full), freshness p50/p99 (event entering the trainer's source -> first
prediction served by a model that learned it; the oldest event of each delta), load average.

`--attach` serves from the trainer's shared tables (`freshrec serve --attach`, the trainer sharing
them: `--share`) instead of the registry's deltas, `--workers N` with N server processes,
`--servers-on all` lets the servers use every core (the trainer and the driver then share them);
`--baseline` first measures the delta-following single server the same way, for `capacity_ratio`.
`--table-ids N` fills the trainer's table with N ids first (a production-sized table, for the
memory figure: the trainer's resident bytes against trainer + servers' proportional set size).
Each sweep step reports the cores the driver, the trainer and the servers used.

`--sweep 200,400,...` then drives the server at each /predict rate in turn (/recommend at a tenth of
it, `--sweep-seconds` each) and reports `capacity_rps`, the highest rate whose /predict p99 stays
under 10 ms with no failed request. The driver is measured alone first (`driver_alone`): the same
load at the top rate against a server that answers every request at once with a constant (its own
process, on the server's core), so its p99 is the driver's own share of every figure.

    .venv/bin/python bench/serve.py [--seconds 35] [--rate 300] [--sweep 200,400,600,800,1000] [--workers 1]
        [--attach] [--baseline] [--servers-on last|all] [--table-ids N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import asyncio
import gc
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from freshrec.engine.sync import SyncConfig
from freshrec.share import SharedArea

CANDIDATES = 100


def _trainer(args: argparse.Namespace) -> None:
    """Learn the paced simulated stream and publish until killed."""
    import threading

    import torch

    from freshrec.engine.sync import Publisher
    from freshrec.engine.train_serve import learn_live
    from freshrec.events.event import EventChunk
    from freshrec.events.live import LiveQueue
    from freshrec.events.simulator import Simulator, SimulatorConfig
    from freshrec.features import FeaturePipeline, default_specs
    from freshrec.models import ModelConfig, build_model
    from freshrec.share import SharedArea, ShareWriter
    from freshrec.snapshot import ModelRegistry
    from freshrec.train import OnlineTrainer

    torch.set_num_threads(1)
    os.nice(args.trainer_nice)
    tick = 0.1
    per_tick = max(1, int(args.events_per_s * tick))
    sim = Simulator(SimulatorConfig(batch_size=per_tick, total_events=10**9, seed=1))
    specs = default_specs(sim.fields, dim=16)
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=16)))
    if args.table_ids:   # a production-sized table: ids the stream never sends (they take memory, not time)
        (table,) = trainer.model.tables.values()
        for start in range(0, args.table_ids, 1 << 20):
            table.slots(np.arange(1 << 62, (1 << 62) + min(1 << 20, args.table_ids - start)) + start, now=0.0)
    share = ShareWriter(SharedArea(args.share), trainer.model) if args.share else None
    (Path(args.registry) / "trainer-ready").touch()
    pipeline = FeaturePipeline(specs)
    publisher = Publisher(ModelRegistry(args.registry), trainer.model, sim.fields,
                          SyncConfig(sync_interval=args.sync_interval, full_interval=args.full_interval))

    def paced():
        """The simulator's chunks at `events_per_s`, each stamped with the time it entered."""
        next_tick = time.monotonic()
        for chunk in sim:
            yield EventChunk(chunk.table, chunk.positions, chunk.source, chunk.kind, entered=time.time())
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    learn_live(paced(), LiveQueue(sim.fields), pipeline, trainer, publisher, threading.Event(), follow=False,
               share=share)


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return status, await self.reader.readexactly(length)


async def _drive(port: int, seconds: float, rates: dict[str, float], bodies: dict[str, list[bytes]]) -> dict:
    """Open-loop load; the driver's garbage collector is off meanwhile (its full collections over
    the run's tens of thousands of tasks stalled the driver ~120 ms, charged to the server)."""
    gc.collect()
    gc.disable()
    try:
        return await _drive_gc_off(port, seconds, rates, bodies)
    finally:
        gc.enable()


async def _drive_gc_off(port: int, seconds: float, rates: dict[str, float], bodies: dict[str, list[bytes]]) -> dict:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for k in range(16):
        connection = Connection(*await asyncio.open_connection("127.0.0.1", port))
        for path in rates:  # warm-up, not measured: every connection, every endpoint, a few times
            for _ in range(5):
                await connection.post(path, bodies[path][k])
        pool.put_nowait(connection)
    latencies: dict[str, list[float]] = {path: [] for path in rates}
    failed = {path: 0 for path in rates}
    versions: set[int] = set()

    async def one(path: str, body: bytes, due: float) -> None:
        connection = await pool.get()
        try:
            status, answer = await connection.post(path, body)
            if status != 200:
                failed[path] += 1
            else:
                versions.add(orjson.loads(answer)["version"])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):   # IndexError: a closed connection
            failed[path] += 1
            connection = Connection(*await asyncio.open_connection("127.0.0.1", port))
        finally:
            pool.put_nowait(connection)
        latencies[path].append(time.perf_counter() - due)

    schedule = sorted((k / rate, path) for path, rate in rates.items() for k in range(int(seconds * rate)))
    start = time.perf_counter()
    tasks = []
    for k, (offset, path) in enumerate(schedule):
        due = start + offset
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(path, bodies[path][k % len(bodies[path])], due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    out = {"requests_per_s": len(schedule) / elapsed, "versions_seen": len(versions)}
    for path, values in latencies.items():
        ms = np.array(values) * 1e3
        name = path.strip("/")
        out[name] = {"requests": len(values), "failed": failed[path], "p50_ms": float(np.percentile(ms, 50)),
                     "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}
    return out


class _Constant(asyncio.Protocol):
    """A server that answers each HTTP/1.1 request (a body of Content-Length bytes) with a constant."""

    ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"version":0}'

    def connection_made(self, transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(self.ANSWER)


def _constant_server(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Constant, "127.0.0.1", port)
        await server.serve_forever()
    asyncio.run(serve())


def _bodies(rng: np.random.Generator) -> dict[str, list[bytes]]:
    predict, recommend = [], []
    for _ in range(200):
        user = int(rng.integers(0, 10_000))
        items = [int(i) for i in rng.integers(0, 5_000, CANDIDATES)]
        context = {"hour": int(rng.integers(0, 24))}
        predict.append(orjson.dumps({"user": user, "context": context, "candidates": items}))
        recommend.append(orjson.dumps({"user": user, "context": context, "k": 10}))
    return {"/predict": predict, "/recommend": recommend}


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if orjson.loads(_get(port, "/healthz"))["status"] == "ok":
                return
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.2)
    raise TimeoutError("the server did not become ready")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _at_rate(port: int, rate: float, seconds: float, bodies: dict[str, list[bytes]],
             groups: dict[str, list[int]] | None = None) -> dict:
    """/predict at `rate` and /recommend at a tenth of it: the /predict figures, and the cores each
    group of processes used meanwhile."""
    groups = {"driver": [os.getpid()], **(groups or {})}
    before = {name: _cpu_seconds(pids) for name, pids in groups.items()}
    started = time.perf_counter()
    figures = asyncio.run(_drive(port, seconds, {"/predict": rate, "/recommend": rate / 10}, bodies))
    elapsed = time.perf_counter() - started
    predict = figures["predict"]
    return {"rate": rate, "achieved": figures["requests_per_s"], "p50_ms": predict["p50_ms"],
            "p99_ms": predict["p99_ms"], "failed": predict["failed"] + figures["recommend"]["failed"],
            "recommend_p99_ms": figures["recommend"]["p99_ms"],
            "cores": {name: round((_cpu_seconds(pids) - before[name]) / elapsed, 3) for name, pids in groups.items()}}


def _driver_alone(rate: float, seconds: float, bodies: dict[str, list[bytes]], env: dict, cores: set[int]) -> dict:
    """The sweep's top rate against the constant server: what the driver itself costs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    constant = subprocess.Popen([sys.executable, __file__, "--role", "constant", "--port", str(port)], env=env,
                                preexec_fn=lambda: os.sched_setaffinity(0, cores))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline or constant.poll() is not None:
                    raise RuntimeError("the constant server did not start") from None
                time.sleep(0.05)
        return _at_rate(port, rate, seconds, bodies)
    finally:
        constant.terminate()
        constant.wait(timeout=20)


def _counter(metrics: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


def _memory(pid: int) -> dict[str, int]:
    """Resident and proportional (shared pages split among their users) bytes of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return {name.lower(): int(fields[name].split()[0]) * 1024 for name in ("Rss", "Pss")}


def _family(pid: int) -> list[int]:
    """`pid` and its children (a `serve --workers` supervisor and its workers)."""
    children = [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
                if _parent(stat) == pid]
    return [pid, *children]


def _parent(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _session(args: argparse.Namespace, attach: bool, workers: int, sweep: list[float], env: dict,
             cores: list[int]) -> dict:
    """Start a trainer and a server (`attach`: `serve --attach` on the trainer's shared tables, else
    `serve --registry`, following its deltas), drive the fixed rates, then the sweep; the figures."""
    registry = Path(tempfile.mkdtemp(prefix="freshrec-bench-serve-"))
    share = f"bench-{os.getpid()}-{workers}" if attach else None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_cores = set(cores) if args.servers_on == "all" else {cores[-1]}
    other_cores = set(cores[:-1]) or {cores[-1]}
    trainer = subprocess.Popen([sys.executable, __file__, "--role", "trainer", "--registry", str(registry),
                                "--events-per-s", str(args.events_per_s), "--trainer-nice", str(args.trainer_nice),
                                "--sync-interval", str(args.sync_interval), "--full-interval", str(args.full_interval),
                                "--table-ids", str(args.table_ids), *(["--share", share] if share else [])],
                               env=env, preexec_fn=lambda: os.sched_setaffinity(0, other_cores))
    server = None
    figures: dict = {"attach": attach, "workers": workers, "server_cores": sorted(server_cores)}
    try:
        while not (registry / "trainer-ready").exists():
            if trainer.poll() is not None:
                raise RuntimeError("the trainer exited")
            time.sleep(0.2)
        source = ["--attach", share, "--registry", str(registry)] if attach else ["--registry", str(registry)]
        server = subprocess.Popen([sys.executable, "-m", "freshrec.cli", "serve", *source, "--port", str(port),
                                   *(["--workers", str(workers)] if workers > 1 else [])], env=env,
                                  stderr=open(registry / "server.log", "wb"),
                                  preexec_fn=lambda: os.sched_setaffinity(0, server_cores))
        _wait_ready(port, server)
        time.sleep(2.0)  # warm up: the first versions, numba kernels
        servers, trainer_now = [_memory(pid) for pid in _family(server.pid)], _memory(trainer.pid)
        figures["memory"] = {   # the trainer's resident bytes are what it holds alone, shared pages included
            "trainer_alone_rss_mb": trainer_now["rss"] / 2**20,
            "trainer_and_servers_pss_mb": (trainer_now["pss"] + sum(m["pss"] for m in servers)) / 2**20,
            "server_processes": len(servers), "server_pss_mb": [round(m["pss"] / 2**20, 1) for m in servers]}
        figures["memory"]["ratio"] = figures["memory"]["trainer_and_servers_pss_mb"] / \
            figures["memory"]["trainer_alone_rss_mb"]
        before = _get(port, "/metrics").decode()
        figures.update(asyncio.run(_drive(port, args.seconds, {"/predict": args.rate,
                                                               "/recommend": args.recommend_rate}, _BODIES)))
        metrics = _get(port, "/metrics").decode()
        model = orjson.loads(_get(port, "/model"))
        if sweep:
            groups = {"trainer": [trainer.pid], "servers": _family(server.pid)}
            figures["sweep"] = [_at_rate(port, rate, args.sweep_seconds, _BODIES, groups) for rate in sweep]
            passed = [step["rate"] for step in figures["sweep"] if step["p99_ms"] <= 10.0 and not step["failed"]]
            figures["capacity_rps"] = max(passed, default=0.0)
    finally:
        for process in (trainer, server):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if share is not None:
            shutil.rmtree(SharedArea(share).path, ignore_errors=True)
    figures["swaps_during_load"] = {
        kind: _counter(metrics, "freshrec_swaps_total", f'kind="{kind}"')
        - _counter(before, "freshrec_swaps_total", f'kind="{kind}"') for kind in ("delta", "full", "shared")}
    fresh = model.get("freshness_s", {})
    figures.update({"failed": figures["predict"]["failed"] + figures["recommend"]["failed"],
                    "freshness_p50_s": fresh.get("p50"), "freshness_p99_s": fresh.get("p99"),
                    "freshness_samples": fresh.get("n")})
    return figures


_BODIES = _bodies(np.random.default_rng(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("driver", "trainer", "constant"), default="driver")
    parser.add_argument("--port", type=int, help="--role constant: the port to answer on")
    parser.add_argument("--sweep", help="comma-separated /predict rates to find the capacity at")
    parser.add_argument("--sweep-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="server processes (freshrec serve --workers)")
    parser.add_argument("--attach", action="store_true",
                        help="the servers attach to the trainer's shared tables (serve --attach) instead of "
                             "following the registry's deltas")
    parser.add_argument("--baseline", action="store_true",
                        help="first measure the delta-following single server the same way (capacity ratio)")
    parser.add_argument("--servers-on", choices=("last", "all"), default="last",
                        help="the servers' cores: the last one alone, or all of them")
    parser.add_argument("--table-ids", type=int, default=0,
                        help="ids the trainer's table holds before the stream starts (a production-sized table)")
    parser.add_argument("--share", help="--role trainer: share the tables under this name")
    parser.add_argument("--registry", type=Path)
    parser.add_argument("--seconds", type=float, default=35.0)
    parser.add_argument("--rate", type=float, default=300.0, help="/predict requests per second")
    parser.add_argument("--recommend-rate", type=float, default=30.0)
    parser.add_argument("--events-per-s", type=float, default=2000.0)
    parser.add_argument("--sync-interval", type=float, default=1.0)
    parser.add_argument("--full-interval", type=float, default=SyncConfig.full_interval,
                        help="seconds between full snapshots (a table of millions of rows: a burst of writing)")
    parser.add_argument("--trainer-nice", type=int, default=10,
                        help="the trainer's niceness: on 2 cores it yields the CPU to the server")
    args = parser.parse_args()
    if args.role == "trainer":
        return _trainer(args)
    if args.role == "constant":
        return _constant_server(args.port)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(cores[:-1]) or {cores[-1]})  # the driver stays off the servers' core
    sweep = sorted(float(rate) for rate in args.sweep.split(",")) if args.sweep else []
    out: dict = {"bench": "serve", "seconds": args.seconds,
                 "target_rates": {"predict": args.rate, "recommend": args.recommend_rate}}
    if args.baseline:
        out["baseline"] = _session(args, attach=False, workers=1, sweep=sweep, env=env, cores=cores)
    out.update(_session(args, attach=args.attach, workers=args.workers, sweep=sweep, env=env, cores=cores))
    if sweep:
        out["driver_alone"] = _driver_alone(max(sweep), args.sweep_seconds, _BODIES, env,
                                            set(cores) if args.servers_on == "all" else {cores[-1]})
    if args.baseline and sweep:
        out["capacity_ratio"] = out["capacity_rps"] / max(out["baseline"]["capacity_rps"], 1.0)
    print(json.dumps({
        **out, "trainer_events_per_s": args.events_per_s, "sync_interval_s": args.sync_interval,
        "table_ids": args.table_ids, "load_before": load_before, "load_after": os.getloadavg(),
        "targets": {"predict_p99_ms": 10.0, "failed": 0, "swaps": 25, "freshness_p99_s": 0.1 if args.attach else 2.0,
                    "capacity_ratio": 5.0, "memory_ratio": 1.3}}))


if __name__ == "__main__":
    main()
