"""The online training loop: source -> validate -> features -> micro-batches -> `trainer.learn`.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=1000, total_events=3000))
>>> specs = default_specs(sim.fields, dim=8)
>>> trainer = OnlineTrainer(build_model("fm", specs))
>>> figures = train_online(sim, FeaturePipeline(specs), trainer, batch_size=512)
>>> figures["rows"], figures["batches"], figures["model"], 0.0 < figures["auc"] < 1.0
(3000, 6, 'OnlineFM', True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from freshrec.batch import Batch
from freshrec.engine.ingest import IngestSummary, ingest
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.features import FeaturePipeline
from freshrec.train import OnlineTrainer


def train_online(chunks: Iterable[EventChunk], pipeline: FeaturePipeline, trainer: OnlineTrainer,
                 batch_size: int = 512, on_batch: Callable[[Batch, IngestSummary], None] | None = None,
                 dead_letters: DeadLetterSink | None = None) -> dict:
    """Learn from every micro-batch of the stream in order (each scored before it is learned).

    `on_batch` sees each batch after it was learned (progress bars read `trainer.metrics`).
    Returns the ingestion figures (`IngestSummary.as_dict()`, with `seconds` and `rows_per_s`
    covering featurisation and training) merged with `trainer.report()` and the model's name.
    """
    def step(batch: Batch, summary: IngestSummary) -> None:
        trainer.learn(batch)
        if on_batch is not None:
            on_batch(batch, summary)

    start = time.perf_counter()
    summary = ingest(chunks, pipeline, batch_size, on_batch=step, dead_letters=dead_letters)
    summary.seconds = time.perf_counter() - start
    return {**summary.as_dict(), **trainer.report(), "model": type(trainer.model).__name__}
