"""Replay A/B: the same time-ordered stream through several training regimes ("arms"), each
scored prequentially (every batch predicted by the arm's serving model before any arm learns it).

- `daily` (the article's "before"; `hourly` likewise): at each day boundary of event time, a model
  retrained offline on all the data before it, frozen for the next day (before the first boundary
  there is no model: the arm predicts the positive rate seen so far);
- `online`: the online trainer, predict-then-learn on every micro-batch;
- `hybrid`: the online trainer plus an offline model retrained every `offline_interval` of event
  time on the last `offline_window` of data (warm-started from the online model), served through
  the fusion strategy ("hedge": weights that follow recent logloss; "rebase": the online model takes
  each new offline model's weights, Monolith-style).

Offline retraining runs inline here (the engine runs it in a thread) so that each arm's training
compute (`cpu_seconds`, process time) is measured alone.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> sim = Simulator(SimulatorConfig(total_events=3000, batch_size=1000))
>>> specs = default_specs(sim.fields, dim=4)
>>> pipeline = FeaturePipeline(specs)
>>> batches = [b for chunk in sim for b in pipeline.build(chunk).split(256)]
>>> result = replay_ab(batches, specs, ABConfig(arms=("hourly", "online"), day=1.0))
>>> sorted(result.arms), result.arms["online"].rows
(['hourly', 'online'], 3000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from freshrec.batch import Batch
from freshrec.features import FeatureSpec
from freshrec.fusion import HedgeFusion, rebase
from freshrec.metrics.streaming import auc, logloss
from freshrec.models import ModelConfig, build_model
from freshrec.models.base import OnlineModel, probabilities
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.offline import OfflineConfig, OfflineTrainer

__all__ = ["ABConfig", "ABResult", "ArmResult", "replay_ab"]

ARMS = ("daily", "hourly", "online", "hybrid")


@dataclass(frozen=True)
class ABConfig:
    """- `arms`: any of daily, hourly, online, hybrid; `model`, `model_config`: what every arm trains;
    - `day`: seconds of event time per day (the daily arm's period and the report's x axis);
    - `offline_interval`, `offline_window`: the hybrid's retraining (None window: all data);
    - `offline`: the offline trainer's settings; `fusion`: "hedge" or "rebase"."""

    arms: tuple[str, ...] = ("daily", "online", "hybrid")
    model: str = "fm"
    model_config: ModelConfig = field(default_factory=lambda: ModelConfig(dim=16))
    day: float = 86_400.0
    offline_interval: float = 6 * 3600.0
    offline_window: float | None = 7 * 86_400.0
    offline: OfflineConfig = field(default_factory=lambda: OfflineConfig(epochs=2, batch_size=2048))
    fusion: str = "hedge"

    def __post_init__(self) -> None:
        if unknown := [a for a in self.arms if a not in ARMS]:
            raise ValueError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
        if self.fusion not in ("hedge", "rebase"):
            raise ValueError(f"fusion {self.fusion!r} is not 'hedge' or 'rebase'")


@dataclass
class ArmResult:
    """One arm: its prequential scores, labels and event times, training CPU seconds, retrains,
    and (hybrid with hedge) the online weight over time as (event index, weight) points."""

    name: str
    scores: np.ndarray
    labels: np.ndarray
    ts: np.ndarray
    cpu_seconds: float
    retrains: int = 0
    weights: list[tuple[int, float]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.labels)

    def figures(self, day: float, first_day: float) -> dict:
        """Overall AUC/logloss, the same from the second day on, and per day."""
        days = np.floor((self.ts - first_day) / day).astype(np.int64)
        per_day = {}
        for d in np.unique(days):
            mask = days == d
            if len(np.unique(self.labels[mask])) == 2:
                per_day[int(d)] = {"rows": int(mask.sum()), "auc": auc(self.scores[mask], self.labels[mask]),
                                   "logloss": logloss(self.scores[mask], self.labels[mask])}
        later = days >= 1
        return {"rows": self.rows, "auc": auc(self.scores, self.labels), "logloss": logloss(self.scores, self.labels),
                "auc_from_day2": auc(self.scores[later], self.labels[later]) if later.any() else None,
                "cpu_seconds": self.cpu_seconds, "retrains": self.retrains, "per_day": per_day}


@dataclass
class ABResult:
    arms: dict[str, ArmResult]
    config: ABConfig
    first_day: float

    def figures(self) -> dict:
        return {name: arm.figures(self.config.day, self.first_day) for name, arm in self.arms.items()}


class _Retrained:
    """daily/hourly: retrain on everything before each period boundary, frozen in between."""

    def __init__(self, period: float, offline: OfflineTrainer) -> None:
        self.period, self.offline = period, offline
        self.model: OnlineModel | None = None
        self.past: list[Batch] = []
        self.boundary: float | None = None
        self.cpu = 0.0
        self.retrains = 0
        self.positives = self.labelled = 0.0

    def step(self, batch: Batch) -> np.ndarray:
        start = float(batch.ts[0])
        if self.boundary is None:
            self.boundary = (math.floor(start / self.period) + 1) * self.period
        if start >= self.boundary:
            began = time.process_time()
            self.model = self.offline.learn(self.past).model
            self.cpu += time.process_time() - began
            self.retrains += 1
            self.boundary = (math.floor(start / self.period) + 1) * self.period
        if self.model is None:
            scores = np.full(len(batch), self.positives / self.labelled if self.labelled else 0.5, np.float32)
        else:
            scores = probabilities(self.model, batch)
        self.past.append(batch)
        labels = batch.labels.numpy()
        self.positives += float(np.nansum(labels))
        self.labelled += float((~np.isnan(labels)).sum())
        return scores


class _Online:
    def __init__(self, trainer: OnlineTrainer) -> None:
        self.trainer, self.cpu = trainer, 0.0

    def step(self, batch: Batch) -> np.ndarray:
        began = time.process_time()
        scores = self.trainer.learn(batch)["predictions"]
        self.cpu += time.process_time() - began
        return scores.numpy() if scores is not None else np.full(len(batch), 0.5, np.float32)


class _Hybrid(_Online):
    """Online learning plus an offline model retrained on a recent window, fused."""

    def __init__(self, trainer: OnlineTrainer, offline: OfflineTrainer, config: ABConfig) -> None:
        super().__init__(trainer)
        self.offline, self.config = offline, config
        self.fusion = HedgeFusion() if config.fusion == "hedge" else None
        self.model: OnlineModel | None = None
        self.past: list[Batch] = []
        self.next_retrain: float | None = None
        self.retrains = 0

    def step(self, batch: Batch) -> np.ndarray:
        start = float(batch.ts[0])
        if self.next_retrain is None:
            self.next_retrain = start + self.config.offline_interval
        if start >= self.next_retrain and self.past:
            self._retrain(start)
        offline = probabilities(self.model, batch) if self.model is not None and self.fusion else None
        online = super().step(batch)
        self.past.append(batch)
        if self.fusion is None:
            return online
        scores = self.fusion.predict(online, offline)
        self.fusion.learn(online, offline, batch.labels.numpy())
        return scores

    def _retrain(self, now: float) -> None:
        window = self.config.offline_window
        recent = [b for b in self.past if window is None or float(b.ts[-1]) >= now - window]
        began = time.process_time()
        self.model = self.offline.learn(recent, warm_from=self.trainer.model).model
        if self.fusion is None:
            rebase(self.trainer.model, self.model)
        self.cpu += time.process_time() - began
        self.retrains += 1
        self.next_retrain = now + self.config.offline_interval
        self.past = [b for b in self.past if window is None or float(b.ts[-1]) >= now - window]


def replay_ab(batches: Sequence[Batch], specs: Sequence[FeatureSpec], config: ABConfig | None = None) -> ABResult:
    """Run every arm over `batches` (time-ordered micro-batches) and collect their scores."""
    config = config or ABConfig()

    def build() -> OnlineModel:
        return build_model(config.model, specs, config.model_config)

    def offline() -> OfflineTrainer:
        return OfflineTrainer(build, config.offline, TrainerConfig(seed=config.model_config.seed))

    arms: dict[str, ArmResult] = {}
    for name in config.arms:
        runner = {"daily": lambda: _Retrained(config.day, offline()),
                  "hourly": lambda: _Retrained(3600.0, offline()),
                  "online": lambda: _Online(OnlineTrainer(build(), TrainerConfig(seed=config.model_config.seed))),
                  "hybrid": lambda: _Hybrid(OnlineTrainer(build(), TrainerConfig(seed=config.model_config.seed)),
                                            offline(), config)}[name]()
        scores = np.concatenate([runner.step(batch) for batch in batches]).astype(np.float32)
        weights = list(runner.fusion.history) if isinstance(runner, _Hybrid) and runner.fusion else []
        arms[name] = ArmResult(name, scores, np.concatenate([b.labels.numpy() for b in batches]),
                               np.concatenate([b.ts.numpy() for b in batches]), runner.cpu,
                               getattr(runner, "retrains", 0), weights)
    first = float(batches[0].ts[0]) if batches else 0.0
    return ABResult(arms, config, math.floor(first / config.day) * config.day)
