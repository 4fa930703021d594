"""Embedding benchmark: the dynamic table against a hashed nn.EmbeddingBag and the article's
ParameterDict table, on a Zipf-distributed id stream over 10M distinct ids, dim 16, one core.

Prints one JSON line:
- `lookup_existing_ids_per_s`: id -> row of ids already in the table (index only), and with the
  rows gathered (`lookup_gather_ids_per_s`);
- `lookup_or_insert_ids_per_s`: batches of 64k ids with 10% never-seen ids (admission on first
  sight), steady state; `..._first_pass_...` is the pass before it, which may include a doubling
  of the index (rehash into fresh memory, the amortised cost of growth);
- `train_ids_per_s`: a full step (lookup, pooled forward over 26 features, backward, Adagrad) for
  this table, `nn.EmbeddingBag(sparse=True)` over 2^22 hashed buckets with sparse Adagrad, and
  the article's `ParameterDict` table (on a small slice), with the ratios;
- memory per live id against the raw row + Adagrad state bytes: resident (RSS growth while the
  table is filled with 10M ids) and as the table accounts it (`nbytes`, after the later inserts).

    .venv/bin/python bench/embedding.py [--distinct 10000000] [--steps 20]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from freshrec.batch import SparseFeatures  # noqa: E402
from freshrec.embedding.collection import EmbeddingCollection  # noqa: E402
from freshrec.embedding.optimizers import Adagrad  # noqa: E402
from freshrec.embedding.table import DynamicEmbedding, TableConfig  # noqa: E402
from freshrec.events.event import FieldKind  # noqa: E402
from freshrec.features import FeatureSpec, hash_values  # noqa: E402

DIM, FEATURES, BATCH = 16, 26, 4096
BUCKETS = 1 << 22


def zipf_ids(rng: np.random.Generator, n: int, distinct: int) -> np.ndarray:
    """Hashed ids of Zipf(s = 1) ranks in [0, distinct): P(rank = r) ~ 1 / r."""
    ranks = np.floor(distinct ** rng.random(n)).astype(np.int64) - 1
    return hash_values(pa.array(ranks), 7)


def resident_bytes() -> int:
    """This process's resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rate(work, items: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return items / best


def table_speeds(distinct: int, rng: np.random.Generator) -> dict:
    table = DynamicEmbedding(TableConfig(dim=DIM, optimizer=Adagrad(lr=0.05)))
    all_ids = hash_values(pa.array(np.arange(distinct)), 7)
    rss_before = resident_bytes()
    for start in range(0, distinct, 1 << 20):
        table.slots(all_ids[start:start + (1 << 20)], now=0.0, train=True)
    resident = (resident_bytes() - rss_before) / table.live
    existing = zipf_ids(rng, 1 << 22, distinct)
    slots = table.slots(existing, 0.0, False)
    raw = DIM * 4 * 2  # fp32 row + Adagrad accumulator

    def insert_pass(first_new: int) -> float:
        fresh = existing.copy()
        new = rng.random(len(fresh)) < 0.1  # 10% ids never seen before
        fresh[new] = hash_values(pa.array(np.arange(int(new.sum())) + first_new), 7)
        return rate(lambda: [table.slots(fresh[at:at + 65_536], 1.0, True)
                             for at in range(0, len(fresh), 65_536)], len(fresh), repeat=1)

    capacity = table.index_capacity
    with_resize = insert_pass(2 * distinct)  # this pass may double the index (fresh memory)
    resized = table.index_capacity != capacity
    return {
        "lookup_existing_ids_per_s": rate(lambda: table.slots(existing, 0.0, False), len(existing)),
        "lookup_gather_ids_per_s": rate(lambda: table.gather(slots), len(slots)),
        "lookup_or_insert_ids_per_s": insert_pass(3 * distinct),
        "lookup_or_insert_first_pass_ids_per_s": with_resize, "first_pass_resized_index": resized,
        "resident_bytes_per_live_id_after_fill": resident, "resident_memory_ratio": resident / raw,
        "live_ids": table.live, "bytes_per_live_id": table.nbytes / table.live,
        "raw_bytes_per_id": raw, "memory_ratio": table.nbytes / table.live / raw,
    }


def batches(rng: np.random.Generator, steps: int, distinct: int) -> list[torch.Tensor]:
    return [torch.from_numpy(zipf_ids(rng, BATCH * FEATURES, distinct)) for _ in range(steps)]


def step_ours(collection: EmbeddingCollection, ids: torch.Tensor, target: torch.Tensor) -> None:
    sparse = SparseFeatures([f"C{k}" for k in range(FEATURES)], ids, torch.ones(len(ids), dtype=torch.int32))
    pooled = collection(sparse, now=0.0, train=True)
    total = pooled["C0"]
    for k in range(1, FEATURES):
        total = total + pooled[f"C{k}"]
    loss = ((total - target) ** 2).mean()
    loss.backward()
    collection.apply_gradients()


def step_bag(bag: nn.EmbeddingBag, optimizer: torch.optim.Optimizer, ids: torch.Tensor, target: torch.Tensor) -> None:
    offsets = torch.arange(0, len(ids), 1, dtype=torch.int64)
    pooled = bag(ids % BUCKETS, offsets).view(FEATURES, BATCH, DIM)
    loss = ((pooled.sum(0) - target) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


class ParameterDictTable(nn.Module):
    """The article's DynamicEmbedding: one nn.Parameter per id in a ParameterDict."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ParameterDict()
        self.dim = dim

    def forward(self, ids: list[int]) -> torch.Tensor:
        for new in set(map(str, ids)) - set(self.embeddings.keys()):
            self.embeddings[new] = nn.Parameter(torch.randn(self.dim) * 0.01)
        return torch.stack([self.embeddings[str(i)] for i in ids])


def step_parameter_dict(table: ParameterDictTable, ids: torch.Tensor, target: torch.Tensor) -> None:
    """The article's online update: loss, backward, `param -= lr * grad` on the touched rows."""
    rows = table(ids.tolist()).view(FEATURES, -1, DIM)
    loss = ((rows.sum(0) - target[: rows.shape[1]]) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        for key in set(map(str, ids.tolist())):
            param = table.embeddings[key]
            param -= 0.05 * param.grad
            param.grad = None


def train_speeds(distinct: int, steps: int, rng: np.random.Generator) -> dict:
    data = batches(rng, steps, distinct)
    target = torch.randn(BATCH, DIM)
    specs = [FeatureSpec(f"C{k}", FieldKind.CATEGORICAL, dim=DIM, table="shared") for k in range(FEATURES)]
    collection = EmbeddingCollection(specs, TableConfig(dim=DIM, optimizer=Adagrad(lr=0.05)))
    bag = nn.EmbeddingBag(BUCKETS, DIM, mode="sum", sparse=True)
    bag_optimizer = torch.optim.Adagrad(bag.parameters(), lr=0.05)
    step_ours(collection, data[0], target)
    step_bag(bag, bag_optimizer, data[0], target)
    ours = rate(lambda: [step_ours(collection, ids, target) for ids in data], steps * len(data[0]), 1)
    hashed = rate(lambda: [step_bag(bag, bag_optimizer, ids, target) for ids in data], steps * len(data[0]), 1)
    small = [ids[: FEATURES * 64] for ids in data[:3]]
    pdict = ParameterDictTable(DIM)
    param_dict = rate(lambda: [step_parameter_dict(pdict, ids, target) for ids in small],
                      sum(len(s) for s in small), 1)
    return {"train_ids_per_s": ours, "embedding_bag_ids_per_s": hashed, "parameter_dict_ids_per_s": param_dict,
            "ratio_vs_embedding_bag": ours / hashed, "ratio_vs_parameter_dict": ours / param_dict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    figures = {"benchmark": "embedding", "distinct_ids": args.distinct, "dim": DIM, "threads": 1}
    figures.update(table_speeds(args.distinct, rng))
    figures.update(train_speeds(args.distinct, args.steps, rng))
    figures.update({"load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]})
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
