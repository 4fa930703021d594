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
>>> from freshrec.train import Unit
>>> sim = Simulator(SimulatorConfig(total_events=3000, batch_size=1000))
>>> specs = default_specs(sim.fields, dim=4)
>>> pipeline = FeaturePipeline(specs)
>>> units = [Unit.of(pipeline.build(chunk), 256) for chunk in sim]   # chunks in micro-batches of 256
>>> result = replay_ab(units, specs, ABConfig(arms=("hourly", "online"), day=1.0))
>>> sorted(result.arms), result.arms["online"].rows
(['hourly', 'online'], 3000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from freshrec.batch import Batch
from freshrec.engine.loop import chunk_scores
from freshrec.evaluate.windows import gaps, over_windows, window_bounds
from freshrec.features import FeatureSpec
from freshrec.fusion import HedgeFusion, rebase
from freshrec.metrics.streaming import auc, logloss
from freshrec.models import ModelConfig, build_model
from freshrec.models.base import OnlineModel, probabilities
from freshrec.train import OnlineTrainer, TrainerConfig, Unit
from freshrec.train.offline import OfflineConfig, OfflineTrainer
from freshrec.train.online import MicroBatched

__all__ = ["ABConfig", "ABResult", "ArmResult", "arm_runner", "replay_ab"]

ARMS = ("daily", "hourly", "online", "hybrid")


@dataclass(frozen=True)
class ABConfig:
    """- `arms`: any of daily, hourly, online, hybrid; `model`, `model_config`: what every arm trains;
    - `day`: seconds of event time per day (the daily arm's period and the report's x axis);
    - `offline_interval`, `offline_window`: the hybrid's retraining (None window: all data);
    - `offline`: the offline trainer's settings; `fusion`: "hedge" or "rebase" (`fusion_window`,
      `fusion_eta`: the Hedge weights' window of events and rate, see `HedgeFusion`);
    - `trainer`: the online and offline trainers' settings (None: `TrainerConfig(seed=model_config.seed)`);
    - `retrain_per_chunk`: the hybrid retrains only before a unit (a chunk), at most once per unit, where the
      engine checks its schedule, not before any micro-batch."""

    arms: tuple[str, ...] = ("daily", "online", "hybrid")
    model: str = "fm"
    model_config: ModelConfig = field(default_factory=lambda: ModelConfig(dim=16))
    day: float = 86_400.0
    offline_interval: float = 6 * 3600.0
    offline_window: float | None = 7 * 86_400.0
    offline: OfflineConfig = field(default_factory=lambda: OfflineConfig(epochs=2, batch_size=2048))
    fusion: str = "hedge"
    fusion_window: int = 2000
    fusion_eta: float | None = None
    trainer: TrainerConfig | None = None
    retrain_per_chunk: bool = False

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

    def figures(self, day: float, first_day: float, bounds: list[slice]) -> dict:
        """Overall AUC/logloss, the AUC from the second day on, and over the windows `bounds`
        (`freshrec.evaluate.windows`: AUC with its band, cumulative AUC)."""
        later = np.floor((self.ts - first_day) / day) >= 1
        return {"rows": self.rows, "auc": auc(self.scores, self.labels), "logloss": logloss(self.scores, self.labels),
                "auc_from_day2": auc(self.scores[later], self.labels[later]) if later.any() else None,
                "cpu_seconds": self.cpu_seconds, "retrains": self.retrains,
                "windows": over_windows(self.scores, self.labels, self.ts, bounds)}


@dataclass
class ABResult:
    arms: dict[str, ArmResult]
    config: ABConfig
    first_day: float

    def figures(self) -> dict:
        """Each arm's figures over the same windows of events, and (after the first arm, the reference)
        its AUC gap to the first arm in each window (`gap`)."""
        rows = {arm.rows for arm in self.arms.values()}
        if len(rows) != 1:
            raise ValueError(f"the arms scored different numbers of events: {sorted(rows)}")
        bounds = window_bounds(rows.pop())
        out = {name: arm.figures(self.config.day, self.first_day, bounds) for name, arm in self.arms.items()}
        reference = next(iter(out))
        for name, figures in out.items():
            if name != reference:
                figures["gap"] = {"to": reference, "windows": gaps(figures["windows"], out[reference]["windows"])}
        return out


class _Clock:
    """When an arm acts (retrains): before the first micro-batch that starts at or after `next`,
    which the micro-batch acted at moves on to `advance(its start)` (the first micro-batch sets it);
    `per_unit`: only a unit's first micro-batch is looked at."""

    def __init__(self, advance: Callable[[float], float], per_unit: bool = False) -> None:
        self.advance, self.next, self.per_unit = advance, None, per_unit

    def scores(self, unit: MicroBatched, run: Callable[[Unit, bool], np.ndarray]) -> np.ndarray:
        """The unit's scores: `run(part, acts)` on each of its `segments`, in order."""
        return np.concatenate([run(part, acts) for part, acts in self.segments(unit)])

    def segments(self, unit: MicroBatched) -> Iterator[tuple[Unit, bool]]:
        """`unit` in runs of whole micro-batches, each (run, whether the arm acts before it)."""
        sizes = np.asarray(unit.sizes, np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        starts = unit.whole.ts.numpy()[offsets[:-1]]
        cuts = []
        for i, start in enumerate(starts.tolist()):
            if self.next is None:
                self.next = self.advance(start)
            elif start >= self.next:
                cuts.append(i)
                self.next = self.advance(start)
            if self.per_unit:
                break
        bounds = [0, *[c for c in cuts if c > 0], len(sizes)]
        for first, last in zip(bounds, bounds[1:]):
            rows = slice(int(offsets[first]), int(offsets[last]))
            yield Unit(_rows(unit.whole, rows), sizes[first:last].tolist()), first in cuts


def _rows(batch: Batch, rows: slice) -> Batch:
    """Rows `rows` of `batch` (the batch itself when that is all of it)."""
    if rows.start == 0 and rows.stop == len(batch):
        return batch
    sizes = [rows.start, rows.stop - rows.start, len(batch) - rows.stop]
    parts = batch.split([size for size in sizes if size])
    return parts[1 if rows.start else 0]


class _Retrained:
    """daily/hourly: retrain on everything before each period boundary, frozen in between."""

    def __init__(self, period: float, offline: OfflineTrainer) -> None:
        self.offline = offline
        self.clock = _Clock(lambda start: (math.floor(start / period) + 1) * period)
        self.model: OnlineModel | None = None
        self.past: list[Batch] = []
        self.cpu = 0.0
        self.retrains = 0
        self.positives = self.labelled = 0.0

    def step(self, unit: MicroBatched) -> np.ndarray:
        return self.clock.scores(unit, self._run)

    def _run(self, run: Unit, retrain: bool) -> np.ndarray:
        batch = run.whole
        if retrain:
            began = time.process_time()
            self.model = self.offline.learn(self.past).model
            self.cpu += time.process_time() - began
            self.retrains += 1
        labels = batch.labels.numpy()
        sizes = np.asarray(run.sizes, np.int64)
        starts = np.cumsum(sizes) - sizes
        positives = np.add.reduceat(np.nan_to_num(labels), starts)   # per micro-batch
        labelled = np.add.reduceat((~np.isnan(labels)).astype(np.float64), starts)
        if self.model is None:   # each micro-batch: the positive rate of the micro-batches before it
            seen = self.labelled + np.cumsum(labelled) - labelled
            rates = np.where(seen > 0, (self.positives + np.cumsum(positives) - positives) / np.maximum(seen, 1), 0.5)
            scores = np.repeat(rates, sizes).astype(np.float32)
        else:
            scores = probabilities(self.model, batch)
        self.past.append(batch)
        self.positives += float(positives.sum())
        self.labelled += float(labelled.sum())
        return scores


class _Online:
    def __init__(self, trainer: OnlineTrainer) -> None:
        self.trainer, self.cpu = trainer, 0.0

    def step(self, unit: MicroBatched) -> np.ndarray:
        """The unit's scores, each micro-batch's from before it was learned (0.5 where one was not)."""
        began = time.process_time()
        ((_, steps, _),) = self.trainer.learn_stream([unit])
        self.cpu += time.process_time() - began
        return np.nan_to_num(chunk_scores(steps), nan=0.5)


class _Hybrid(_Online):
    """Online learning plus an offline model retrained on a recent window, fused."""

    def __init__(self, trainer: OnlineTrainer, offline: OfflineTrainer, config: ABConfig) -> None:
        super().__init__(trainer)
        self.offline, self.config = offline, config
        self.clock = _Clock(lambda start: start + config.offline_interval, config.retrain_per_chunk)
        self.fusion = HedgeFusion(config.fusion_window, config.fusion_eta) if config.fusion == "hedge" else None
        self.model: OnlineModel | None = None
        self.past: list[Batch] = []
        self.retrains = 0

    def step(self, unit: MicroBatched) -> np.ndarray:
        return self.clock.scores(unit, self._run)

    def _run(self, run: Unit, retrain: bool) -> np.ndarray:
        batch = run.whole
        if retrain and self.past:
            self._retrain(float(batch.ts[0]))
        offline = probabilities(self.model, batch) if self.model is not None and self.fusion else None
        online = super().step(run)
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
        self.past = [b for b in self.past if window is None or float(b.ts[-1]) >= now - window]


def arm_runner(name: str, specs: Sequence[FeatureSpec], config: ABConfig) -> _Online | _Retrained:
    """The arm `name` ("daily", "hourly", "online" or "hybrid") of `config` over `specs`, ready to
    `step(unit)` through the stream: each call returns the unit's prequential scores; `cpu` (training
    process seconds) and, for the retrained arms, `retrains` count as it goes."""
    def build() -> OnlineModel:
        return build_model(config.model, specs, config.model_config)

    trainer = config.trainer or TrainerConfig(seed=config.model_config.seed)

    def offline() -> OfflineTrainer:
        return OfflineTrainer(build, config.offline, trainer)

    return {"daily": lambda: _Retrained(config.day, offline()),
            "hourly": lambda: _Retrained(3600.0, offline()),
            "online": lambda: _Online(OnlineTrainer(build(), trainer)),
            "hybrid": lambda: _Hybrid(OnlineTrainer(build(), trainer), offline(), config)}[name]()


def replay_ab(units: Sequence[MicroBatched], specs: Sequence[FeatureSpec], config: ABConfig | None = None) -> ABResult:
    """Run every arm over `units` (the time-ordered stream in chunks cut into micro-batches, e.g.
    `Unit.of(batch, 512)`) and collect their scores: the online models learn a chunk's
    micro-batches in one call, the frozen models score the runs between two retrainings at once."""
    config = config or ABConfig()
    units = [unit for unit in units if unit.whole is not None and len(unit.whole)]
    arms: dict[str, ArmResult] = {}
    for name in config.arms:
        runner = arm_runner(name, specs, config)
        scores = np.concatenate([runner.step(unit) for unit in units]).astype(np.float32)
        weights = list(runner.fusion.history) if isinstance(runner, _Hybrid) and runner.fusion else []
        arms[name] = ArmResult(name, scores, np.concatenate([u.whole.labels.numpy() for u in units]),
                               np.concatenate([u.whole.ts.numpy() for u in units]), runner.cpu,
                               getattr(runner, "retrains", 0), weights)
    first = float(units[0].whole.ts[0]) if units else 0.0
    return ABResult(arms, config, math.floor(first / config.day) * config.day)
