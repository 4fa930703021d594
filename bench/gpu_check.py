"""The GPU device check: tables, models and the copy pipeline on one CUDA device, in one JSON line.

Runs where a GPU is (a few minutes on one; it says so and exits 0 where there is none):
- `lookup_ids_per_s`, `lookup_or_insert_ids_per_s`: batches of 64k ids against a table of
  `--rows` ids, dim 8, rows and Adagrad state in device memory, the id index on the host: ids ->
  slots on the host, rows gathered on the device (lookup); with half the ids new, admitted and
  initialised (lookup-or-insert). Each with its ratio to HierarchicalKV's published figure for one
  A100 80GB PCIe (README "Benchmark & Performance", dim 8, capacity 128M keys, load factor 0.5,
  batches of 1M keys: find 2.470, find_or_insert 1.478 billion keys/s);
- `train_rows_per_s`: FM and DeepFM learned through `OnlineTrainer` on the device (micro-batches
  of `--batch`, copied ahead by the device feed) in fp32, bf16 and fp16, with the fused FM step on
  this machine's CPU (fp32, one thread) as the baseline measured in the same run;
- `deepfm_peak_bytes`: one DeepFM step's peak device memory (hidden 1024-1024-512, batch 16384)
  without and with activation checkpointing;
- `copy_compute`: a DeepFM stream's copies alone, compute alone (batches already on the device),
  one after the other, and through the feed; `overlap` = the share of the copy time the feed hid;
- `allocations_per_batch`: device memory segments (cudaMalloc) and page-locked staging buffers
  allocated per micro-batch after warm-up (0 means none on the hot path).

    python bench/gpu_check.py [--rows 16000000] [--batch 4096] [--json-out FILE]

`--json-out FILE` is rewritten after each stage with what was measured so far.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from freshrec.embedding import Adagrad, DynamicEmbedding, TableConfig
from freshrec.models import build_model
from freshrec.models.base import training_loss
from freshrec.models.deepfm import DeepFMConfig
from freshrec.models.fm import FMConfig
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer, TrainerConfig, Unit
from freshrec.train.staging import DeviceFeed

HKV_A100 = {"find": 2.470e9, "find_or_insert": 1.478e9}   # keys/s, see the module docstring
LOOKUP_BATCH = 1 << 16


def synced(work) -> float:
    """Seconds `work()` takes, the device's queue drained before and after."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    work()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def table_rates(rows: int) -> dict:
    table = DynamicEmbedding(TableConfig(dim=8, device="cuda", chunk_rows=1 << 24,
                                         optimizer=Adagrad(lr=0.05, initial_accumulator=0.1)))
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, 2 * rows + 1, dtype=np.int64))
    known, fresh = ids[:rows], ids[rows:]
    filled = synced(lambda: [table.slots(known[i: i + (1 << 20)], now=0.0) for i in range(0, rows, 1 << 20)])
    queries = [rng.choice(known, LOOKUP_BATCH) for _ in range(64)]
    lookup = synced(lambda: [table.gather(table.slots(q, now=1.0, train=False)) for q in queries])
    half = LOOKUP_BATCH // 2
    mixed = [np.concatenate([rng.choice(known, half), fresh[i * half: (i + 1) * half]]) for i in range(64)]
    insert = synced(lambda: [table.gather(table.slots(q, now=2.0)) for q in mixed])
    done = 64 * LOOKUP_BATCH
    return {"table_rows": table.live, "fill_ids_per_s": rows / filled,
            "lookup_ids_per_s": done / lookup, "lookup_vs_hkv_a100_find": done / lookup / HKV_A100["find"],
            "lookup_or_insert_ids_per_s": done / insert,
            "lookup_or_insert_vs_hkv_a100_find_or_insert": done / insert / HKV_A100["find_or_insert"]}


def train_rate(name: str, data, device: str, precision: str, batch: int) -> float:
    config = (DeepFMConfig if name == "deepfm" else FMConfig)(dim=16)
    trainer = OnlineTrainer(build_model(name, data.specs, config), TrainerConfig(device=device, precision=precision))
    units = [Unit.of(whole, batch) for whole in data.batches]
    for _ in trainer.learn_stream(units[:2]):   # warm-up: kernels, the pool, the tables' first rows
        pass
    started = time.perf_counter()
    for _ in trainer.learn_stream(units[2:]):
        pass
    if device != "cpu":
        torch.cuda.synchronize()
    return sum(len(u.whole) for u in units[2:]) / (time.perf_counter() - started)


def peak_bytes(checkpointed: bool) -> int:
    data = stream(rows=16384, batch_size=16384)
    model = build_model("deepfm", data.specs, DeepFMConfig(dim=16, hidden=(1024, 1024, 512),
                                                         checkpoint_towers=checkpointed)).place("cuda")
    batch = DeviceFeed("cuda").one(data.batches[0])
    training_loss(model, model(batch, train=True), batch).backward()   # the tables' rows exist from here
    model.discard_gradients()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    training_loss(model, model(batch, train=True), batch).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def copy_compute(data, batch: int) -> dict:
    model = build_model("deepfm", data.specs, DeepFMConfig(dim=16, hidden=(1024, 1024, 512))).place("cuda")
    hosts = [part for whole in data.batches for part in whole.split(batch)][:200]
    feed = DeviceFeed("cuda")
    moved = [m for _, m in feed(hosts)]

    def compute(batches):
        for b in batches:
            model.zero_grad(set_to_none=True)
            training_loss(model, model(b, train=True), b).backward()
            model.discard_gradients()

    def sequential():
        for h in hosts:
            b = h.to("cuda")
            torch.cuda.synchronize()
            compute([b])

    copies = synced(lambda: [h.pin_memory().to("cuda", non_blocking=True) for h in hosts])
    alone = synced(lambda: compute(moved))
    one_by_one = synced(sequential)
    segments = torch.cuda.memory_stats()["segment.all.allocated"]
    pinned = feed.pool.allocations
    fed = synced(lambda: compute(m for _, m in feed(hosts)))
    return {"batches": len(hosts), "copy_s": copies, "compute_s": alone, "sequential_s": one_by_one,
            "feed_s": fed, "overlap": max(0.0, min(1.0, (one_by_one - fed) / copies)),
            "allocations_per_batch": {
                "cuda_segments": (torch.cuda.memory_stats()["segment.all.allocated"] - segments) / len(hosts),
                "pinned_buffers": (feed.pool.allocations - pinned) / len(hosts)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16_000_000, help="ids in the table for the lookup figures")
    parser.add_argument("--batch", type=int, default=4096, help="micro-batch rows for the training figures")
    parser.add_argument("--events", type=int, default=400_000, help="events of the training stream")
    parser.add_argument("--json-out", help="also write the JSON line here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"gpu": None, "note": "no CUDA device here: nothing measured"}))
        return
    started = time.perf_counter()
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "load_average": os.getloadavg()}

    def stage(figures: dict) -> None:
        """Add a stage's figures; the JSON file holds what was measured so far (a time limit may cut the rest)."""
        out.update(figures)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(json.dumps(out) + "\n")

    stage(table_rates(args.rows))
    data = stream(rows=args.events, batch_size=65_536)
    torch.set_num_threads(1)
    rates = {"fm_cpu_fused_fp32": train_rate("fm", data, "cpu", "fp32", args.batch)}
    for name in ("fm", "deepfm"):
        for precision in ("fp32", "bf16", "fp16"):
            rates[f"{name}_cuda_{precision}"] = train_rate(name, data, "cuda", precision, args.batch)
            stage({"train_rows_per_s": rates, "train_batch": args.batch})
    stage({"deepfm_peak_bytes": {"plain": peak_bytes(False), "checkpointed": peak_bytes(True)}})
    stage({"copy_compute": copy_compute(data, args.batch)})
    stage({"seconds": time.perf_counter() - started})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
