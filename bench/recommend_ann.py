"""/recommend with ANN retrieval: latency for k = 10 from a two-tower's index of `--items` items at `--rate`
requests/s, while the two-tower learns on and publishes a new version every second (each one re-indexed by the
server as the next index version: updates while serving); the same server without retrieval (popularity +
co-occurrence candidates only) is the baseline, measured the same way in the same run.

Two processes besides this driver:
- the trainer (`--role trainer`): the simulator's stream over `--items` items (uniform popularity, so that the
  first `--events` events touch nearly every item: the index holds the items interacted with), an FM ranker and
  a two-tower (`RetrievalLearner`, user history of 20) learned on those events and published in full to two
  registries; then the two-tower keeps learning `--events-per-s` more events a second, publishing a delta each
  second, until killed;
- the server: `freshrec serve --registry RANKING [--retrieval RETRIEVAL]` (one worker, torch on one thread).

The driver is bench/serve.py's: open-loop requests on a fixed schedule over keep-alive connections, each
latency measured from the request's scheduled time. Prints one JSON line: p50/p99/max latency and failed
requests of both servers, the items indexed, the index versions applied while the retrieval server was
measured (`--reindex`: the server's `serve.retrieval_reindex`, the least seconds between two re-indexes of every
item), the p99 ratio, and the load average.

    .venv/bin/python bench/recommend_ann.py [--items 100000] [--events 600000] [--rate 100] [--seconds 30] \
        [--reindex 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from serve import _drive, _get, _wait_ready

from freshrec.cli.serve import check_port

USERS = 20_000


def _trainer(args: argparse.Namespace) -> None:
    """Learn the first `--events`, publish both models in full, then learn on and publish a delta a second."""
    import torch

    from freshrec.engine.sync import Publisher, SyncConfig
    from freshrec.events.simulator import Simulator, SimulatorConfig
    from freshrec.features import FeaturePipeline, default_specs
    from freshrec.models import ModelConfig, build_model
    from freshrec.snapshot import ModelRegistry
    from freshrec.train import OnlineTrainer
    from freshrec.train.retrieval import RetrievalLearner

    torch.set_num_threads(1)
    root = Path(args.dir)
    chunk = max(1, args.events_per_s)
    sim = Simulator(SimulatorConfig(n_items=args.items, n_users=USERS, zipf=0.01, new_item_rate=0.0,
                                    batch_size=chunk, total_events=None, seed=1))
    stream = iter(sim)
    specs = default_specs(sim.fields, dim=16)
    ranker = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=16)))
    pipeline = FeaturePipeline(specs)
    learner = RetrievalLearner.build(sim.fields, history=20)
    keep = SyncConfig(sync_interval=0.0, full_interval=0.0, keep_interactions=args.events)
    ranking = Publisher(ModelRegistry(root / "ranking"), ranker.model, sim.fields, keep)
    retrieval = Publisher(ModelRegistry(root / "retrieval"), learner.model, sim.fields,
                          SyncConfig(sync_interval=1.0, full_interval=1e9, keep_interactions=args.events))
    learned = 0
    while learned < args.events:
        part = next(stream)
        ranker.learn(pipeline.build(part))
        learner.learn(part.table)
        ranking.observe(part)
        retrieval.observe(part)
        learned += len(part)
    ranking.maybe_publish()
    retrieval.maybe_publish()
    (root / "ready").touch()
    while True:   # the two-tower learns on: a new version (re-indexed by the server) every second
        started = time.monotonic()
        part = next(stream)
        learner.learn(part.table)
        retrieval.observe(part)
        retrieval.maybe_publish()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def _retrieval(port: int) -> dict:
    return orjson.loads(_get(port, "/model")).get("retrieval") or {}


def _measure(args: argparse.Namespace, root: Path, retrieval: bool, bodies: list[bytes]) -> dict:
    """One server (with or without the retriever) driven at `--rate` /recommend per s for `--seconds`."""
    port = args.port
    check_port("127.0.0.1", port)
    command = [sys.executable, "-m", "freshrec.cli", "serve", "--registry", str(root / "ranking"), "--port", str(port)]
    if retrieval:
        (root / "serve.yaml").write_text(f"serve: {{retrieval_reindex: {args.reindex}}}\n")
        command += ["--retrieval", str(root / "retrieval"), "--config", str(root / "serve.yaml")]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, server, timeout=600)
        while retrieval and _retrieval(port).get("items", 0) < args.items * 0.9:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            time.sleep(0.5)
        before = _retrieval(port) if retrieval else {}
        figures = asyncio.run(_drive(port, args.seconds, {"/recommend": args.rate}, {"/recommend": bodies}))
        after = _retrieval(port) if retrieval else {}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    out = {**figures["recommend"], "requests_per_s": figures["requests_per_s"]}
    if retrieval:
        out |= {"items_indexed": after.get("items"), "index_versions_while_measured":
                (after.get("index_version") or 0) - (before.get("index_version") or 0)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["driver", "trainer"], default="driver")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--events-per-s", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--reindex", type=float, default=1.0, help="serve.retrieval_reindex of the retrieval server")
    args = parser.parse_args()
    if args.role == "trainer":
        _trainer(args)
        return
    root = Path(tempfile.mkdtemp(prefix="freshrec-bench-ann-"))
    trainer = subprocess.Popen([sys.executable, __file__, "--role", "trainer", "--dir", str(root),
                                "--items", str(args.items), "--events", str(args.events),
                                "--events-per-s", str(args.events_per_s)])
    try:
        started = time.monotonic()
        while not (root / "ready").exists():
            if trainer.poll() is not None:
                raise RuntimeError(f"the trainer exited with {trainer.returncode}")
            time.sleep(0.5)
        setup = time.monotonic() - started
        rng = np.random.default_rng(0)
        bodies = [orjson.dumps({"user": int(u), "k": 10}) for u in rng.integers(0, USERS, 500)]
        baseline = _measure(args, root, False, bodies)
        ann = _measure(args, root, True, bodies)
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"bench": "recommend_ann", "items": args.items, "rate": args.rate, "seconds": args.seconds,
                      "k": 10, "reindex_s": args.reindex, "setup_s": round(setup, 1), "retrieval": ann,
                      "baseline": baseline,
                      "p99_ratio": ann["p99_ms"] / baseline["p99_ms"], "load_avg": os.getloadavg()}))


if __name__ == "__main__":
    main()
