"""Online training benchmark: rows/s (prediction + learning, featurisation included) and
prequential AUC of LR, FM and DeepFM on a simulated Criteo stream, against plain PyTorch, with
micro-batches of 512 rows and, for the FM and LR, of 16 and of 1 (learning event by event).

Stream: a simulated Criteo-format file (`write_criteo_tsv`, cached) read in file order by
`CriteoReplay` -> `FeaturePipeline` (13 dense + 26 categorical, dim 16) -> micro-batches of 512,
read and featurised by the loop's reader thread (`freshrec.engine.loop`) a few chunks ahead of the
model. Every model is timed `--repeats` times (interleaved with the other models) and reports its
fastest run. The process is pinned to two cores and torch uses two threads. Each model scores every
batch before learning from it (prequential); AUC is over all those scores (`freshrec.metrics.auc`).

- `fm`, `lr`, `deepfm`: `OnlineFM`, `LogisticRegression` and `DeepFM` trained by `OnlineTrainer`
  through the loop (`run_loop`, what `freshrec replay --model` runs, without log or checkpoints);
  the FM and LR take the fused numba step (`freshrec.train.fused.FusedStep`: a chunk of
  micro-batches per call; the next chunks' ids are resolved in a worker thread while one learns);
  `fm@16`, `fm@1`, `lr@16`, `lr@1`: the same with micro-batches of 16 rows and of 1 (targets:
  300k rows/s at 1, and at 16 0.8x the speed at 512: `fm_b16_vs_b512`, `lr_b16_vs_b512`);
  `deepfm@16`: DeepFM's module step with micro-batches of 16 (a forward and backward per micro-
  batch: `deepfm_b16_vs_b512` measures what that costs);
- `torch_fm`, `torch_deepfm` (the baselines): the same models written plainly in PyTorch on a
  hashed `nn.EmbeddingBag` (2^22 buckets, `sparse=True`, sparse Adagrad; dense Adagrad), the same
  learning rate, initial scale and MLP.

Prints one JSON line: per model rows/s, CPU time per row (all threads) and AUC, the ratios to the
baselines, the load average
before and after. `bench/engine.py` imports `timed` to compare the engine with these figures.

    .venv/bin/python bench/train.py [--rows 1000000] [--models fm,fm@16,fm@1,torch_fm,lr,...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from ingest import criteo_file  # bench/ is on sys.path when run as a script
from torch import nn

from freshrec.batch import Batch
from freshrec.engine.loop import Stages, chunk_scores, micro_batches, run_loop
from freshrec.events.datasets.criteo import FIELDS, CriteoReplay
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.source import LimitedSource
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics import auc
from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer

DIM, BATCH, BUCKETS, LR, INIT_STD, THREADS = 16, 512, 1 << 22, 0.05, 0.01, 2
HIDDEN = (64, 32)  # DeepFMConfig's default MLP, used by the baseline too
SPECS = default_specs(FIELDS, dim=DIM)


def source(path: Path, limit: int | None = None):
    replay = CriteoReplay(path, MemoryDeadLetters())
    return replay if limit is None else LimitedSource(replay, limit)


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


Learner = Callable[[Path, int | None], Iterator[tuple[Batch, torch.Tensor | None]]]


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
    return lambda path, limit: ((b, learn(b)) for b in micro_batches(source(path, limit), FeaturePipeline(SPECS)))


def trainer_learner(name: str, batch: int = BATCH) -> Learner:
    """`OnlineTrainer` through the loop (the fused step for the FM and LR) in micro-batches of
    `batch` rows; yields each chunk and its scores."""
    trainer = OnlineTrainer(build_model(name, SPECS, ModelConfig(dim=DIM, lr=LR, init_std=INIT_STD)))

    def learn(path: Path, limit: int | None) -> Iterator[tuple[Batch, torch.Tensor | None]]:
        scored: list[tuple[Batch, torch.Tensor | None]] = []
        run_loop(Stages(source(path, limit), FeaturePipeline(SPECS), trainer, batch),
                 after=lambda work, steps, _: scored.append((work.whole, torch.from_numpy(chunk_scores(steps))))
                 if steps else None)
        return iter(scored)
    return learn


LEARNERS: dict[str, Callable[[], Learner]] = {
    "fm": lambda: trainer_learner("fm"), "fm@16": lambda: trainer_learner("fm", 16),
    "fm@1": lambda: trainer_learner("fm", 1), "torch_fm": lambda: torch_learner(()),
    "lr": lambda: trainer_learner("lr"), "lr@16": lambda: trainer_learner("lr", 16),
    "lr@1": lambda: trainer_learner("lr", 1), "deepfm": lambda: trainer_learner("deepfm"),
    "deepfm@16": lambda: trainer_learner("deepfm", 16), "torch_deepfm": lambda: torch_learner(HIDDEN)}


def timed(name: str, path: Path, rows: int) -> dict:
    """Warm a throwaway learner (numba caches, allocator), then time a fresh one over the stream."""
    for _ in LEARNERS[name]()(path, 20_000):
        pass
    learn, probs, labels, at = LEARNERS[name](), np.empty(rows, np.float32), np.empty(rows, np.float32), 0
    started, cpu = time.perf_counter(), time.process_time()
    for batch, scores in learn(path, rows):
        kept = ~torch.isnan(scores)   # rows of skipped micro-batches are not scored
        n = int(kept.sum())
        probs[at:at + n], labels[at:at + n] = scores[kept].numpy(), batch.labels[kept].numpy()
        at += n
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows_per_s": round(rows / seconds), "cpu_us_per_row": round(cpu / rows * 1e6, 3),
            "auc": round(auc(probs[:at], labels[:at]), 4)}


def best_run(runs: list[dict]) -> dict:
    """The fastest of a model's runs, with every run's rows/s."""
    return {**max(runs, key=lambda r: r["rows_per_s"]), "rows_per_s_runs": [r["rows_per_s"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--models", default=",".join(LEARNERS))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model (the best counts)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:THREADS]
    os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(THREADS)
    path = criteo_file(args.rows)
    load_before = os.getloadavg()[0]
    figures: dict = {"benchmark": "train", "rows": args.rows, "dim": DIM, "batch": BATCH,
                     "threads": THREADS, "cores": len(cores), "repeats": args.repeats}
    names = args.models.split(",")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so a noisy moment does not hit one model only
        for name in names:
            runs[name].append(timed(name, path, args.rows))
    for name in names:
        figures[name] = best_run(runs[name])
    for ours, base in (("fm", "torch_fm"), ("deepfm", "torch_deepfm")):
        if ours in figures and base in figures:
            figures[f"{ours}_speedup_vs_{base}"] = round(figures[ours]["rows_per_s"] / figures[base]["rows_per_s"], 2)
            figures[f"{ours}_auc_minus_{base}"] = round(figures[ours]["auc"] - figures[base]["auc"], 4)
    for model in ("fm", "lr", "deepfm"):
        for small in (16, 1):
            if model in figures and f"{model}@{small}" in figures:
                figures[f"{model}_b{small}_vs_b512"] = round(
                    figures[f"{model}@{small}"]["rows_per_s"] / figures[model]["rows_per_s"], 2)
    figures.update({"load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
