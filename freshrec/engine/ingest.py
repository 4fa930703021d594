"""The ingestion path: source -> validate (dead letters) -> features -> micro-batches.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> sim = Simulator(SimulatorConfig(batch_size=1000, total_events=3000))
>>> summary = ingest(sim, FeaturePipeline(default_specs(sim.fields)), batch_size=512)
>>> summary.rows, summary.batches
(3000, 6)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch

from freshrec.batch import Batch
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.features import FeaturePipeline


@dataclass
class IngestSummary:
    """Figures of one run of the ingestion path."""

    rows: int = 0
    batches: int = 0
    ids: int = 0
    positives: int = 0
    labelled: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    seconds: float = 0.0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def positive_rate(self) -> float | None:
        return self.positives / self.labelled if self.labelled else None

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s, "positive_rate": self.positive_rate}

    def add(self, batch: Batch, batches: int = 1) -> None:
        """Count `batch` (which the caller cut into `batches` micro-batches)."""
        labelled = ~torch.isnan(batch.labels)
        self.rows += len(batch)
        self.batches += batches
        self.ids += batch.sparse.values().numel()
        self.labelled += int(labelled.sum())
        self.positives += int((batch.labels[labelled] > 0.5).sum())
        if len(batch):
            self.first_ts = float(batch.ts[0]) if self.first_ts is None else self.first_ts
            self.last_ts = float(batch.ts[-1])


def ingest(chunks: Iterable[EventChunk], pipeline: FeaturePipeline, batch_size: int = 512,
           on_batch: Callable[[Batch, IngestSummary], None] | None = None,
           dead_letters: DeadLetterSink | None = None) -> IngestSummary:
    """Build every micro-batch of the stream; `on_batch` sees each batch (progress, training).

    Chunks are featurised whole and then cut, so the summary that `on_batch` sees already
    counts the whole chunk its batch came from.

    The source validates as it reads; pass its `dead_letters` sink to have the rejected
    records counted in the summary.
    """
    summary = IngestSummary()
    start = time.perf_counter()
    for chunk in chunks:
        if not len(chunk):
            continue
        whole = pipeline.build(chunk)  # featurised once per chunk, then cut into micro-batches
        parts = whole.split(batch_size)
        summary.add(whole, len(parts))
        for batch in parts if on_batch is not None else ():
            on_batch(batch, summary)
    summary.seconds = time.perf_counter() - start
    if dead_letters is not None:
        summary.dead_letters = dead_letters.total
        summary.dead_letter_reasons = dict(dead_letters.counts)
    return summary
