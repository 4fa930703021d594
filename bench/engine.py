"""Engine benchmark: events/s end to end (source -> event log -> online FM -> deltas every second,
checkpoints) against the online trainer alone on the same stream, and the engine fed by Kafka.

Stream: a simulated Criteo-format file (13 dense + 26 categorical, cached; `bench/ingest.py`),
read by `CriteoReplay` in chunks of 8,192 rows, featurised (dim 16) and learned in micro-batches of
512 by `OnlineTrainer` with `OnlineFM` (Adagrad), one thread.
- `trainer_alone`: read -> features -> learn, nothing else;
- `engine`: `DataFlowEngine` = the same plus the Parquet event log, a delta published every second
  to a registry, a checkpoint every 100,000 events (target: at least 0.7x the trainer alone);
- `kafka`: the first `--kafka-rows` events produced as JSON messages to a Tansu broker on
  127.0.0.1 (4 partitions; produce time reported apart), then the engine consuming them in a
  consumer group; its events/s counts from the first message to the last.

    .venv/bin/python bench/engine.py [--rows 300000] [--kafka-rows 100000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from ingest import criteo_file  # bench/ is on sys.path when run as a script

from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
from freshrec.events.datasets.criteo import FIELDS, CriteoReplay
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.kafka import KafkaSink, KafkaSource, create_topic, local_broker
from freshrec.events.source import LimitedSource
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer

SPECS = default_specs(FIELDS, dim=16)
CHUNK = 8192


def _model():
    return build_model("fm", SPECS, ModelConfig(dim=16))


def trainer_alone(path: Path, rows: int) -> dict:
    pipeline, trainer = FeaturePipeline(SPECS), OnlineTrainer(_model())
    start = time.perf_counter()
    for chunk in LimitedSource(CriteoReplay(path, MemoryDeadLetters(), batch_size=CHUNK), rows):
        for batch in pipeline.build(chunk).split(512):
            trainer.learn(batch)
    seconds = time.perf_counter() - start
    return {"events_per_s": rows / seconds, "seconds": seconds, "auc": trainer.report()["auc"]}


def engine(source, rows: int, root: Path) -> dict:
    config = EngineConfig(checkpoint_events=100_000)
    run = DataFlowEngine(source, SPECS, _model, root, config)
    first: list[float] = []
    start = time.perf_counter()
    figures = run.run(on_chunk=lambda *_: first or first.append(time.perf_counter()))
    seconds = time.perf_counter() - start
    return {"events_per_s": figures["events"] / seconds, "seconds": seconds, "events": figures["events"],
            "logged": figures["logged"], "auc": figures["auc"], "checkpoints": figures["checkpoints"],
            "deltas": figures["published"]["delta"], "first_chunk_after_s": first[0] - start if first else None}


def kafka(path: Path, rows: int, root: Path) -> dict:
    with local_broker() as bootstrap:
        create_topic(bootstrap, "criteo", 4)
        sink = KafkaSink(bootstrap, "criteo")
        start = time.perf_counter()
        for chunk in LimitedSource(CriteoReplay(path, MemoryDeadLetters(), batch_size=CHUNK), rows):
            sink.send(list(chunk.events()))
        sink.flush()
        produce = time.perf_counter() - start
        source = KafkaSource(bootstrap, "criteo", "bench", FIELDS, MemoryDeadLetters(), idle_timeout=3.0,
                             require_ids=False)
        figures = engine(source, rows, root)
        source.close()
    consumed = figures["seconds"] - (figures["first_chunk_after_s"] or 0.0) - 3.0  # the idle wait at the end
    figures["events_per_s"] = figures["events"] / consumed
    return {**figures, "produce_events_per_s": rows / produce}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--kafka-rows", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = criteo_file(1_000_000)
    load_before = os.getloadavg()
    alone = trainer_alone(path, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        full = engine(LimitedSource(CriteoReplay(path, MemoryDeadLetters(), batch_size=CHUNK), args.rows),
                      args.rows, Path(tmp) / "replay")
        through_kafka = kafka(path, args.kafka_rows, Path(tmp) / "kafka") if args.kafka_rows else None
    print(json.dumps({"benchmark": "engine", "rows": args.rows, "model": "fm", "dim": 16, "threads": 1,
                      "trainer_alone": alone, "engine": full, "engine_vs_trainer_alone":
                      round(full["events_per_s"] / alone["events_per_s"], 3), "kafka": through_kafka,
                      "target_engine_vs_trainer_alone": 0.7, "load_avg_before": load_before[0],
                      "load_avg_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
