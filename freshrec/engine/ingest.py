"""The loop's two replay configurations: `ingest` (source -> validate -> features -> micro-batches)
and `train_online` (the same, each micro-batch learned by an `OnlineTrainer`).

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=1000, total_events=3000))
>>> summary = ingest(sim, FeaturePipeline(default_specs(sim.fields)), batch_size=512)
>>> summary.rows, summary.batches
(3000, 6)
>>> specs = default_specs(sim.fields, dim=8)
>>> trainer = OnlineTrainer(build_model("fm", specs))
>>> figures = train_online(Simulator(SimulatorConfig(batch_size=1000, total_events=3000)), FeaturePipeline(specs),
...                        trainer, batch_size=512)
>>> figures["rows"], figures["batches"], figures["model"], 0.0 < figures["auc"] < 1.0
(3000, 6, 'OnlineFM', True)
>>> 0.5 < figures["baseline_auc"] < 1.0     # the items' running click rates, on the same rows
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from freshrec.engine.loop import Stages, Work, dead_letter_failures, run_loop
from freshrec.engine.summary import IngestSummary
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.features import FeaturePipeline
from freshrec.train import OnlineTrainer
from freshrec.train.baseline import ItemRateBaseline

__all__ = ["IngestSummary", "ingest", "train_online"]


def ingest(chunks: Iterable[EventChunk], pipeline: FeaturePipeline, batch_size: int = 512,
           on_chunk: Callable[[Work, IngestSummary], None] | None = None,
           dead_letters: DeadLetterSink | None = None, trainer: OnlineTrainer | None = None,
           batch_window: float | None = None) -> IngestSummary:
    """Build (and with `trainer`, learn) every micro-batch of the stream (`batch_size` rows at most,
    spanning less than `batch_window` of event time if given); `on_chunk` sees each chunk's `Work`
    (its batch `whole`, cut into micro-batches of `sizes` rows) once it is done (progress bars),
    with a summary that counts it.

    The source validates as it reads; pass its `dead_letters` sink to have the rejected records
    counted in the summary (and a trainer's failed batches sent there)."""
    summary = IngestSummary()

    def after(work: Work, steps: list[dict], held: bool) -> None:
        dead_letter_failures(work, steps, dead_letters)
        if on_chunk is not None and work.whole is not None:
            on_chunk(work, summary)
    run_loop(Stages(chunks, pipeline, trainer, batch_size, batch_window=batch_window), after=after, summary=summary)
    if dead_letters is not None:
        summary.dead_letters = dead_letters.total
        summary.dead_letter_reasons = dict(dead_letters.counts)
    return summary


def train_online(chunks: Iterable[EventChunk], pipeline: FeaturePipeline, trainer: OnlineTrainer,
                 batch_size: int = 512, on_chunk: Callable[[Work, IngestSummary], None] | None = None,
                 dead_letters: DeadLetterSink | None = None, batch_window: float | None = None) -> dict:
    """Learn from every micro-batch of the stream in order (each scored before it is learned).
    Returns the ingestion figures merged with `trainer.report()`, the model's name and, for a
    click model (BCE) on a stream with items, the figures of the trivial baseline on the same rows
    (`ItemRateBaseline`: `baseline_auc`, `baseline_logloss`)."""
    baseline = ItemRateBaseline() if trainer.model.config.loss == "bce" else None

    def each(work: Work, summary: IngestSummary) -> None:
        if baseline is not None:
            baseline.learn_batch(work.whole, work.sizes)
        if on_chunk is not None:
            on_chunk(work, summary)
    summary = ingest(chunks, pipeline, batch_size, each, dead_letters, trainer, batch_window)
    figures = {**summary.as_dict(), **trainer.report(), "model": type(trainer.model).__name__}
    return {**figures, **baseline.report()} if baseline is not None else figures
