"""Prequential scoring of one configuration: the stream in time order, every micro-batch scored by
what would be served before the model learns it, the log loss (or AUC) over a trailing window of
rows (a sliding-window prequential error, as Gama et al. recommend for streams: the model as it
serves now, not its warm-up) reported at stream positions so that a search can stop a trial that
falls behind.

What is scored follows `fusion.strategy`: "none" (or no offline retraining) the online model; "hedge"
the blend of the online model and the newest offline model, with weights that follow their recent
loss; "rebase" the online model re-based on each offline model. Offline retraining runs inline on
everything learned so far, before the first chunk `training.offline_interval` of event time after the
last one (where the engine checks its schedule), so a trial's score does not depend on thread timing.

>>> from freshrec.config import parse_config
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.automl.stream import Stream
>>> stream = Stream.read(Simulator(SimulatorConfig(total_events=2000, batch_size=500)))
>>> settings = parse_config({"model": {"dim": 4}, "fusion": {"strategy": "none"}, "source": {"chunk_rows": 500}})
>>> seen = []
>>> scored = prequential(settings, stream, report=lambda rows, value: seen.append(rows), every=500)
>>> len(scored.scores), seen, 0.0 < scored.logloss() < 1.0
(2000, [500, 1000, 1500, 2000], True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from freshrec.automl.stream import Stream
from freshrec.config import FreshrecConfig
from freshrec.engine.build import feature_specs, model_config, offline_config, trainer_config
from freshrec.engine.loop import featurised
from freshrec.evaluate.ab import ABConfig, arm_runner
from freshrec.features import FeaturePipeline
from freshrec.metrics.streaming import auc, logloss
from freshrec.models.base import OnlineModel

__all__ = ["METRICS", "Scored", "prequential"]

METRICS = ("logloss", "auc")
"""What a search optimises: the prequential log loss (minimised) or AUC (maximised)."""


@dataclass
class Scored:
    """A configuration's prequential `scores` of the stream's rows, their `labels`, training CPU
    seconds and the online `model` it trained."""

    scores: np.ndarray
    labels: np.ndarray
    cpu_seconds: float
    model: OnlineModel | None = None

    def logloss(self, start: int = 0) -> float:
        """The log loss of the labelled rows from row `start` on."""
        return logloss(self.scores[start:], self.labels[start:])

    def auc(self, start: int = 0) -> float | None:
        """The AUC of the labelled rows from row `start` on (None without both classes)."""
        value = auc(self.scores[start:], self.labels[start:])
        return None if math.isnan(value) else value

    def value(self, metric: str, start: int = 0) -> float:
        """`metric` ("logloss" or "auc") from row `start` on (an AUC that cannot be had counts 0.5)."""
        if metric == "logloss":
            return self.logloss(start)
        value = self.auc(start)
        return 0.5 if value is None else value

    def trailing(self, metric: str, window: int | None) -> float:
        """`metric` over the last `window` rows (None: every row)."""
        return self.value(metric, 0 if window is None else max(len(self.scores) - window, 0))


def prequential(settings: FreshrecConfig, stream: Stream, report: Callable[[int, float], None] | None = None,
                every: int = 10_000, metric: str = "logloss", window: int | None = None) -> Scored:
    """Learn `stream` as `settings` say, each micro-batch scored before it is learned; `report(rows,
    value)` gets `metric` over the last `window` rows scored (None: all of them) once at least `every`
    more rows are scored (and at the end) and may raise to stop (a pruned trial)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    specs = feature_specs(settings, stream.fields)
    pipeline = FeaturePipeline(specs, settings.features.target)
    runner = arm_runner(_arm(settings), specs, _ab_config(settings))
    t = settings.training
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    rows, reported = 0, 0
    for work in featurised(stream.replay(settings.source.chunk_rows), pipeline, t.online_batch_size,
                           batch_window=t.online_batch_window):
        scores.append(runner.step(work).astype(np.float32))
        labels.append(work.whole.labels.numpy())
        rows += len(work.whole)
        if report is not None and (rows - reported >= every or rows == len(stream)):
            reported = rows
            report(rows, Scored(np.concatenate(scores), np.concatenate(labels), runner.cpu).trailing(metric, window))
    return Scored(np.concatenate(scores), np.concatenate(labels), runner.cpu, runner.trainer.model)


def _arm(settings: FreshrecConfig) -> str:
    retrains = settings.training.offline_interval is not None
    return "hybrid" if retrains and settings.fusion.strategy != "none" else "online"


def _ab_config(settings: FreshrecConfig) -> ABConfig:
    """The replay arm's settings: the run's model, trainers, offline retraining (on all of the past,
    as the engine's log) and fusion strategy."""
    interval, fusion = settings.training.offline_interval, settings.fusion
    return ABConfig(arms=(_arm(settings),), model=settings.model.name, model_config=model_config(settings),
                    offline_interval=interval if interval is not None else float("inf"), offline_window=None,
                    offline=offline_config(settings), fusion=fusion.strategy if fusion.strategy != "none" else "hedge",
                    fusion_window=fusion.window_events, fusion_eta=fusion.eta, trainer=trainer_config(settings),
                    retrain_per_chunk=True)
