"""Quality benchmark: Monolith's two findings reproduced on the given real streams, as prequential
AUC of the FM (each micro-batch scored before it is learned, the stream in file order).

(a) `tables`: freshrec's collisionless tables against hashed tables of 2^12 ... 2^22 rows per
    table: the same model, stream and order, each id reduced to one of B buckets (`id mod B`, the
    ids being salted 64-bit hashes) before it reaches its table, as a hashed embedding does;
(b) `sync`: the AUC a server would have seen with parameter sync every 1 s, 1 min, 1 h and 1 day
    of event time. The trainer learns every micro-batch; a served copy of the model gets the
    trainer's changes as a `Delta` (what `freshrec run` publishes to its servers) at the first
    micro-batch past each sync boundary, and scores each micro-batch before the trainer learns it.
    `every_batch` is the trainer's own prequential AUC (a sync before every micro-batch).

Streams (`$FRESHREC_DATA`, default ../shared/data): MovieLens-100k (label rating >= 4; event time in
seconds over 7 months), the Criteo head (10,000 rows; no event time in the file, so one second a
row) and the Avazu head (9,999 rows, all in one hour: the reader spreads an hour's rows evenly over
it, so an interval of an hour or more leaves the server on the untrained model).
FM, dim 16, learning rate 0.05, micro-batches of `--batch-size` (32).

Prints one JSON line: per stream `tables` {collisionless, 2^12 ... 2^22: AUC} and `sync`
{every_batch, 1s, 1min, 1h, 1d: AUC}, with the load average before and after.

    .venv/bin/python bench/quality.py [--batch-size 32] [--streams movielens-100k,criteo,avazu]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.batch.sparse import SparseFeatures
from freshrec.engine.loop import micro_batches
from freshrec.events.datasets import open_source
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics import auc
from freshrec.models import ModelConfig, build_model
from freshrec.snapshot import Delta, table_versions
from freshrec.train import OnlineTrainer

STREAMS = {"movielens-100k": "movielens-100k", "criteo": "criteo-kaggle-dac-head/criteo_train_head10000.txt",
           "avazu": "avazu-head/avazu_train_head9999.csv"}
BUCKET_BITS = (12, 14, 16, 18, 20, 22)
SYNC = {"1s": 1.0, "1min": 60.0, "1h": 3600.0, "1d": 86400.0}
DIM, LR = 16, 0.05


def data_folder() -> Path:
    """`$FRESHREC_DATA`, else ../shared/data beside the repository."""
    return Path(os.environ.get("FRESHREC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _batches(stream: str, batch_size: int) -> tuple[list, list[Batch]]:
    """The stream's feature specs and every micro-batch, in order."""
    source = open_source(stream, data_folder() / STREAMS[stream], MemoryDeadLetters())
    specs = default_specs(source.fields, dim=DIM)
    return specs, list(micro_batches(source, FeaturePipeline(specs), batch_size))


def hashed(batch: Batch, buckets: int) -> Batch:
    """`batch` with each id reduced to one of `buckets` (1 ... buckets: ids are positive)."""
    s = batch.sparse
    sparse = SparseFeatures(s.keys(), torch.remainder(s.values(), buckets) + 1, s.lengths())
    return Batch(sparse, batch.dense, batch.labels, batch.ts, batch.dense_keys, batch.targets)


def prequential(specs, batches: list[Batch], transform: Callable[[Batch], Batch] = lambda b: b) -> float:
    """AUC of the FM learning `batches` (each scored first), after `transform`."""
    trainer = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=DIM, lr=LR)))
    for batch in batches:
        trainer.learn(transform(batch))
    return trainer.metrics.summary()["auc"]


def served(specs, batches: list[Batch], interval: float) -> float:
    """AUC of a server whose model gets the trainer's changes every `interval` s of event time."""
    config = ModelConfig(dim=DIM, lr=LR)
    trainer, server = OnlineTrainer(build_model("fm", specs, config)), build_model("fm", specs, config).eval()
    since, version, next_sync = table_versions(trainer.model), 0, -math.inf
    scores, labels = [], []
    for batch in batches:
        first = float(batch.ts[0])
        if first >= next_sync:
            Delta.capture(trainer.model, version, version + 1, since, optimizer_state=False).apply(server)
            since, version = table_versions(trainer.model), version + 1
            next_sync = (math.floor(first / interval) + 1) * interval
        with torch.no_grad():
            scores.append(torch.sigmoid(server(batch, train=False)).numpy())
        labels.append(batch.labels.numpy())
        trainer.learn(batch)
    return auc(np.concatenate(scores), np.concatenate(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--streams", default=",".join(STREAMS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    figures: dict = {"benchmark": "quality", "model": "fm", "dim": DIM, "lr": LR, "batch": args.batch_size,
                     "load_avg_before": os.getloadavg()[0]}
    for stream in args.streams.split(","):
        specs, batches = _batches(stream, args.batch_size)
        tables = {"collisionless": prequential(specs, batches)}
        tables.update({f"2^{bits}": prequential(specs, batches, lambda b, n=1 << bits: hashed(b, n))
                       for bits in BUCKET_BITS})
        sync = {"every_batch": tables["collisionless"]}
        sync.update({name: served(specs, batches, seconds) for name, seconds in SYNC.items()})
        figures[stream] = {"rows": sum(len(b) for b in batches),
                           "tables": {k: round(v, 4) for k, v in tables.items()},
                           "sync": {k: round(v, 4) for k, v in sync.items()}}
    figures["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
