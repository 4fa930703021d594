"""Distributed online training: events/s of `freshrec run --workers N` (torchrun, gloo, tables sharded
by id) for 1 and 2 workers on this machine, against one process (`freshrec run`, the fused step) in
the same run; bytes exchanged per row; time in collectives per group step; and a projection to 16
workers.

Stream: MovieLens-100k from `$FRESHREC_DATA` (the simulator's first 100,000 events without it), the
FM (dim 16), micro-batches of 512 cut by size, a checkpoint every 20,000 events, no server. Every
figure is the product's own path: the CLI, its launcher, torchrun and the workers.

The projection is a small model fed by what was measured here (`project`): a group step of W
workers, each learning `rank_batch` events, takes the compute time per event measured on one
worker (the group of 1: its time outside collectives per row) times `rank_batch`, plus per
collective a latency `alpha` x log2(W) (a tree or ring of W ranks), plus the bytes each rank sends
(measured bytes per distinct id asked x ids asked per event x `rank_batch` x (W - 1) / W) over the
link's bandwidth. Links: 100 Gb/s Ethernet (`alpha` 15 us, 12.5 GB/s) and NVLink (`alpha` 5 us,
300 GB/s per GPU); the compute per event is this CPU's whole loop outside collectives (reading,
featurising, logging and the module step of the FM, `outside_collectives_us_per_event`): a GPU's
step would be faster, so the projection is bounded by this CPU's compute. `collective_ms_per_step`
is wall time inside collectives per group step, waiting for the slower rank included. TorchRec's
published figure to set it against: 5.37M rows/s on 8 A100s.

Publishing: each run publishes versions to `STATE/registry` (the group: each rank its part of
each version); `server_bootstrap_ms` is what a server takes to load the newest full snapshot and
the deltas after it (`ModelService.sync`), assembled from the 2 workers' parts or whole from the
one process, and `versions_published` how many versions each run published.

On a GPU machine, `--device cuda` is the device check of the distributed path: every run learns
on GPUs (each worker on its own, NCCL between them), 2 workers where 2 GPUs are.

    .venv/bin/python bench/distributed.py [--limit 100000] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LINKS = {"ethernet_100gbps": (15e-6, 12.5e9), "nvlink": (5e-6, 300e9)}
TORCHREC_8_A100_ROWS_PER_S = 5.37e6
COLLECTIVES_PER_STEP = 4   # the header's all-gather; ids, rows, gradients (dense ones riding along): all-to-alls
RANK_BATCH = 512


def data_args(limit: int) -> list[str]:
    data = Path(os.environ.get("FRESHREC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if (data / "movielens-100k").is_dir():
        return ["--format", "movielens-100k", "--limit", str(limit)]
    return ["--format", "simulator", "--limit", str(limit)]


def run(state: Path, workers: int | None, args: list[str]) -> dict:
    """`freshrec run` (one process; or `workers` under torchrun) on the stream; its JSON figures."""
    command = [sys.executable, "-m", "freshrec.cli", "run", "--state", str(state), "--no-serve",
               "--offline-interval", "off", "--batch-window", "off", "--checkpoint-events", "20000", "--dim", "16",
               "--quiet", "--json", *args]
    if workers is not None:
        command[4:4] = ["--workers", str(workers)]
    if workers == 1:   # a group of one: the workers' code path, collectives being the identity
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                   *command[1:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    if workers == 1:
        return json.loads((state / "figures.json").read_text())
    return json.loads(done.stdout.strip().splitlines()[-1])


def bootstrap(state: Path) -> tuple[float, int]:
    """Seconds a server takes to serve the newest version of the registry in `state` from nothing
    (the faster of 3 servers: the first pays for compiling the tables' kernels), and how many
    versions the registry lists."""
    from freshrec.serve import ModelService
    from freshrec.snapshot import ModelRegistry

    registry = ModelRegistry(state / "registry")
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        ModelService(registry).sync()
        seconds.append(time.perf_counter() - started)
    return min(seconds), len(set(registry.full_versions() + registry.delta_versions()))


def project(one: dict, two: dict, workers: int, alpha: float, bandwidth: float) -> float:
    """Events/s of `workers` workers, each learning `RANK_BATCH` events a step (see the docstring)."""
    compute_per_row = (one["seconds"] - one["collective_seconds"]) / one["rows"]
    bytes_per_row = two["bytes_per_row_asked"] * two["rows_asked_per_row"]
    remote = (workers - 1) / workers
    step = (compute_per_row * RANK_BATCH + COLLECTIVES_PER_STEP * alpha * math.ceil(math.log2(workers))
            + bytes_per_row * RANK_BATCH * remote / bandwidth)
    return workers * RANK_BATCH / step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100_000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: every run learns on GPUs (a worker each; 2 workers only where 2 GPUs are)")
    options = parser.parse_args()
    args = data_args(options.limit) + (["--device", "cuda"] if options.device == "cuda" else [])
    gpus = torch.cuda.device_count()
    if options.device == "cuda" and not gpus:
        print(json.dumps({"bench": "distributed", "device": "cuda", "gpus": 0,
                          "note": "no CUDA device here: nothing measured"}))
        return
    pair = options.device == "cpu" or gpus >= 2
    with tempfile.TemporaryDirectory() as root:
        single = run(Path(root) / "single", None, args)
        one = run(Path(root) / "one", 1, args)
        two = run(Path(root) / "two", 2, args) if pair else None
        runs = {"single": "single", **({"workers_2": "two"} if pair else {"workers_1": "one"})}
        served = {name: bootstrap(Path(root) / folder) for name, folder in runs.items()}
    single_rate = single["rows"] / single["seconds"]
    figures = {"bench": "distributed", "device": options.device, "gpus": gpus, "stream": args[1],
               "events": one["events"], "load_avg": os.getloadavg()[0], "cores": os.cpu_count(),
               "single_process_events_per_s": single_rate, "workers_1_events_per_s": one["rows_per_s"],
               "workers_1_vs_single_process": one["rows_per_s"] / single_rate,
               "outside_collectives_us_per_event": 1e6 * (one["seconds"] - one["collective_seconds"]) / one["rows"],
               "auc": {"single": single["auc"], "workers_1": one["auc"]},
               "torchrec_8_a100_rows_per_s": TORCHREC_8_A100_ROWS_PER_S,
               "server_bootstrap_ms": {name: 1e3 * seconds for name, (seconds, _) in served.items()},
               "versions_published": {name: count for name, (_, count) in served.items()}}
    if two is None:
        figures["workers_2"] = f"not run: 2 workers need 2 GPUs, {gpus} here"
    else:
        figures.update({
            "workers_2_events_per_s": two["rows_per_s"], "workers_2_vs_1": two["rows_per_s"] / one["rows_per_s"],
            "workers_2_vs_single_process": two["rows_per_s"] / single_rate,
            "bytes_per_row": two["bytes_per_row_asked"], "rows_asked_per_event": two["rows_asked_per_row"],
            "collective_ms_per_step": 1e3 * two["collective_seconds"] / max(two["group_steps"], 1),
            "projection_16_workers_events_per_s": {link: project(one, two, 16, *spec)
                                                   for link, spec in LINKS.items()}})
        figures["auc"]["workers_2"] = two["auc"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
