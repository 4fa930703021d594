"""Online training benchmark: rows/s (prediction + learning, featurisation included) and
prequential AUC of LR, FM and DeepFM on a simulated Criteo stream, against plain PyTorch.

Stream: a simulated Criteo-format file (`write_criteo_tsv`, cached) read in file order by
`CriteoReplay` -> `FeaturePipeline` (13 dense + 26 categorical, dim 16) -> micro-batches of 512.
Featurisation runs either inline (between batches, in the training thread) or in a reader thread
a few chunks ahead of the model; every model is timed both ways, `--repeats` times (interleaved
with the other models), and reports its fastest run. The
process is pinned to two cores and torch uses two threads. Each model scores every batch before
learning from it (prequential); AUC is over all those scores (`freshrec.metrics.auc`).

- `fm`: `OnlineFM`'s weights trained by the fused numba path (`freshrec.train.fm_fast.FastFM`,
  `learn_stream`: the next batches' ids are resolved in a worker thread while one learns);
- `lr`, `deepfm`: `LogisticRegression` and `DeepFM` modules trained by `OnlineTrainer`;
- `torch_fm`, `torch_deepfm` (the baselines): the same models written plainly in PyTorch on a
  hashed `nn.EmbeddingBag` (2^22 buckets, `sparse=True`, sparse Adagrad; dense Adagrad), the same
  learning rate, initial scale and MLP.

Prints one JSON line: per model rows/s and AUC, the ratios to the baselines, the load average
before and after.

    .venv/bin/python bench/train.py [--rows 1000000] [--models fm,torch_fm,lr,deepfm,torch_deepfm]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from ingest import criteo_file  # bench/ is on sys.path when run as a script
from torch import nn

from freshrec.batch import Batch
from freshrec.events.datasets.criteo import FIELDS, CriteoReplay
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics import auc
from freshrec.models import FMConfig, ModelConfig, OnlineFM, build_model
from freshrec.train.fm_fast import FastFM
from freshrec.train import OnlineTrainer

DIM, BATCH, BUCKETS, LR, INIT_STD, THREADS = 16, 512, 1 << 22, 0.05, 0.01, 2
HIDDEN = (64, 32)  # DeepFMConfig's default MLP, used by the baseline too
SPECS = default_specs(FIELDS, dim=DIM)


def micro_batches(path: Path, reader: bool, limit: int | None = None) -> Iterator[Batch]:
    """File -> features -> micro-batches; with `reader`, the featurisation runs in a thread a few
    chunks ahead of the model, else in the caller's thread between batches."""
    pipeline, ready = FeaturePipeline(SPECS), queue.Queue(maxsize=4)
    if not reader:
        rows = 0
        for chunk in CriteoReplay(path, MemoryDeadLetters()):
            yield from pipeline.build(chunk).split(BATCH)
            rows += len(chunk)
            if limit is not None and rows >= limit:
                return
        return

    def read() -> None:
        rows = 0
        for chunk in CriteoReplay(path, MemoryDeadLetters()):
            ready.put(pipeline.build(chunk).split(BATCH))
            rows += len(chunk)
            if limit is not None and rows >= limit:
                break
        ready.put(None)

    threading.Thread(target=read, daemon=True).start()
    while (parts := ready.get()) is not None:
        yield from parts


class HashedFM(nn.Module):
    """The plain PyTorch FM: each field's id hashed into a shared `nn.EmbeddingBag` of width k + 1
    (column 0 the linear weight), dense features linear; with `hidden`, DeepFM's MLP on top."""

    def __init__(self, fields: int, dense: int, hidden: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(BUCKETS, DIM + 1, mode="sum", sparse=True)
        nn.init.normal_(self.bag.weight, std=INIT_STD)
        self.dense = nn.Linear(dense, 1, bias=False)
        nn.init.zeros_(self.dense.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        layers, width = [], fields * DIM + dense
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.deep = nn.Sequential(*layers, nn.Linear(width, 1)) if hidden else None

    def forward(self, batch: Batch) -> torch.Tensor:
        sparse, rows = batch.sparse, len(batch)
        fields = self.bag(sparse.values() % BUCKETS, sparse.offsets()[:-1]).view(-1, rows, DIM + 1)
        total, factors = fields.sum(0), fields[:, :, 1:]
        pair = 0.5 * (total[:, 1:].pow(2) - factors.pow(2).sum(0)).sum(1)
        logits = self.bias + self.dense(batch.dense).squeeze(1) + total[:, 0] + pair
        if self.deep is not None:
            deep_in = torch.cat([factors.permute(1, 0, 2).reshape(rows, -1), batch.dense], dim=1)
            logits = logits + self.deep(deep_in).squeeze(1)
        return logits


Learner = Callable[[Iterable[Batch]], Iterator[tuple[Batch, torch.Tensor]]]


def one_at_a_time(learn: Callable[[Batch], torch.Tensor]) -> Learner:
    """A learner of one batch as a learner of a stream."""
    return lambda batches: ((batch, learn(batch)) for batch in batches)


def torch_learner(hidden: tuple[int, ...]) -> Learner:
    """Forward, BCE, backward, sparse Adagrad on the bag and Adagrad on the rest."""
    torch.manual_seed(0)
    model = HashedFM(sum(s.is_sparse for s in SPECS), sum(not s.is_sparse for s in SPECS), hidden)
    sparse_opt = torch.optim.Adagrad([model.bag.weight], lr=LR)
    dense_opt = torch.optim.Adagrad([p for n, p in model.named_parameters() if n != "bag.weight"], lr=LR)

    def learn(batch: Batch) -> torch.Tensor:
        logits = model(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        sparse_opt.zero_grad()
        dense_opt.zero_grad()
        loss.backward()
        sparse_opt.step()
        dense_opt.step()
        return torch.sigmoid(logits.detach())
    return one_at_a_time(learn)


def fast_fm_learner() -> Learner:
    """`FastFM.learn_stream`: the ids of the next batches are resolved in a worker thread."""
    model = OnlineFM(SPECS, FMConfig(dim=DIM, lr=LR, init_std=INIT_STD))
    return FastFM(model, torch.optim.Adagrad([model.dense_weight, model.bias], lr=LR)).learn_stream


def trainer_learner(name: str) -> Learner:
    trainer = OnlineTrainer(build_model(name, SPECS, ModelConfig(dim=DIM, lr=LR, init_std=INIT_STD)))
    return one_at_a_time(lambda batch: trainer.learn(batch)["predictions"])


LEARNERS: dict[str, Callable[[], Learner]] = {
    "fm": fast_fm_learner, "torch_fm": lambda: torch_learner(()),
    "lr": lambda: trainer_learner("lr"), "deepfm": lambda: trainer_learner("deepfm"),
    "torch_deepfm": lambda: torch_learner(HIDDEN)}


def run(name: str, path: Path, rows: int, reader: bool) -> dict:
    """Warm a throwaway learner (numba caches, allocator), then time a fresh one over the stream."""
    for _ in LEARNERS[name]()(micro_batches(path, reader, limit=20_000)):
        pass
    learn, probs, labels, at = LEARNERS[name](), np.empty(rows, np.float32), np.empty(rows, np.float32), 0
    started = time.perf_counter()
    for batch, scores in learn(micro_batches(path, reader)):
        n = len(batch)
        if scores is not None:
            probs[at:at + n], labels[at:at + n] = scores.numpy(), batch.labels.numpy()
            at += n
    seconds = time.perf_counter() - started
    return {"rows_per_s": round(rows / seconds), "auc": round(auc(probs[:at], labels[:at]), 4),
            "featurise": "reader thread" if reader else "inline"}


def best_run(runs: list[dict]) -> dict:
    """The fastest of a model's runs (each model gets its best mode and repeat), with every run's rows/s."""
    best = max(runs, key=lambda r: r["rows_per_s"])
    by_mode: dict[str, list[int]] = {}
    for r in runs:
        by_mode.setdefault(r["featurise"], []).append(r["rows_per_s"])
    return {**best, "rows_per_s_by_mode": by_mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--models", default=",".join(LEARNERS))
    parser.add_argument("--featurise", default="inline,reader",
                        help="featurisation modes to time (each model reports its faster one)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model and mode (the best counts)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:THREADS]
    os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(THREADS)
    path = criteo_file(args.rows)
    load_before = os.getloadavg()[0]
    figures: dict = {"benchmark": "train", "rows": args.rows, "dim": DIM, "batch": BATCH,
                     "threads": THREADS, "cores": len(cores), "repeats": args.repeats}
    modes = [mode == "reader" for mode in args.featurise.split(",")]
    names = args.models.split(",")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so a noisy moment does not hit one model only
        for name in names:
            runs[name] += [run(name, path, args.rows, reader) for reader in modes]
    for name in names:
        figures[name] = best_run(runs[name])
    for ours, base in (("fm", "torch_fm"), ("deepfm", "torch_deepfm")):
        if ours in figures and base in figures:
            figures[f"{ours}_speedup_vs_{base}"] = round(figures[ours]["rows_per_s"] / figures[base]["rows_per_s"], 2)
            figures[f"{ours}_auc_minus_{base}"] = round(figures[ours]["auc"] - figures[base]["auc"], 4)
    figures.update({"load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
