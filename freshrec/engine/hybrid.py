"""Hybrid training in the engine: periodic offline retraining from the event log in a worker
thread (the online trainer never waits), each result published as an offline snapshot; with
`fusion="rebase"` the online model is re-based on it (Monolith-style) back in the engine's thread,
with `fusion="hedge"` the engine scores each labelled batch with both models (before learning it)
and keeps Hedge weights from their recent log loss, published with every online version
(`fusion` in its meta) for the servers to blend the two models' scores.

`OfflineSchedule` is the engine's `retrain` hook: a trigger while a retraining is still running is
skipped (the next one catches up), so jobs never pile up.

>>> import tempfile
>>> from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train.offline import OfflineConfig
>>> sim = Simulator(SimulatorConfig(total_events=4000, batch_size=500))
>>> specs = default_specs(sim.fields, dim=4)
>>> root = tempfile.mkdtemp()
>>> engine = DataFlowEngine(sim, specs, lambda: build_model("fm", specs), root,
...                         EngineConfig(publish=False, retrain_events=2000))
>>> schedule = OfflineSchedule(engine, OfflineConfig(epochs=1), fusion="rebase")
>>> engine.retrain = schedule
>>> figures = engine.run(on_chunk=schedule.poll)
>>> schedule.close(engine)
>>> schedule.published >= 1, schedule.published + schedule.skipped, figures["retrains"]
(True, 2, 2)
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from freshrec.batch import Batch
from freshrec.engine.dataflow import DataFlowEngine
from freshrec.fusion import HedgeFusion, rebase
from freshrec.log import EventLog
from freshrec.models.base import OnlineModel, probabilities
from freshrec.snapshot import ModelRegistry, Snapshot
from freshrec.train.offline import OfflineCancelled, OfflineConfig, OfflineResult, OfflineRunner, OfflineTrainer

__all__ = ["OfflineSchedule"]


class OfflineSchedule:
    """Retrains `engine`'s model offline on its log (the whole log, or its last `config.window` of event
    time); `poll` (call it after each chunk) applies a finished result: publish to
    `STATE/offline-registry`, and rebase the online model if asked."""

    def __init__(self, engine: DataFlowEngine, config: OfflineConfig | None = None, fusion: str = "none",
                 window: int = 2000, eta: float | None = None) -> None:
        if fusion not in ("none", "rebase", "hedge"):
            raise ValueError(f"fusion {fusion!r} is not none, rebase or hedge")
        self.fusion = fusion
        self.registry = ModelRegistry(engine.root / "offline-registry")
        trainer = OfflineTrainer(engine.build, config or OfflineConfig(), engine.config.trainer)
        self.runner = OfflineRunner(trainer)
        self.reader = EventLog(engine.root / "log", engine.source.fields)  # the worker's own reader
        self.pending: Future[OfflineResult] | None = None
        self.published = self.skipped = self.rebased = self.cancelled = 0
        self.model: OnlineModel | None = None          # the newest offline model (hedge)
        self.version: int | None = None
        self.hedge = HedgeFusion(window, eta) if fusion == "hedge" else None

    def __call__(self, engine: DataFlowEngine) -> None:
        if self.pending is not None and not self.pending.done():
            self.skipped += 1
            return
        self.poll(engine)
        window = self.runner.trainer.config.window
        newest = self.reader.newest if window is not None else None   # its reader is idle: no job runs now
        start = newest - window if newest is not None else None
        self.pending = self.runner.submit_log(self.reader, engine.pipeline, start, warm_from=engine.trainer.model)

    def poll(self, engine: DataFlowEngine, *_: object, apply: bool = True) -> None:
        """Publish (and, with `apply`, rebase on) a finished retraining; nothing if none finished."""
        if self.pending is None or not self.pending.done():
            return
        result, self.pending = self.pending.result(), None
        version = (self.registry.latest() or 0) + 1
        self.registry.publish(Snapshot(result.model, version, {"holdout_logloss": result.holdout_logloss,
                                                               "holdout_auc": result.holdout_auc,
                                                               "rows": result.rows, "events": engine.events}))
        self.published += 1
        self.model, self.version = result.model, version
        if self.fusion == "rebase" and apply:
            rebase(engine.trainer.model, result.model)
            self.rebased += 1

    def observe(self, batch: Batch, online: np.ndarray) -> None:
        """hedge: learn the weights from a batch (a chunk) scored by both models before the online
        one learned it (`online` NaN: a row it did not learn, left out). The offline model does not
        change within a chunk and Hedge's weights come from the rows' losses in its window, so a
        chunk at once is its micro-batches in turn."""
        if self.hedge is not None and self.model is not None:
            learned = ~np.isnan(online)
            labels = np.where(learned, batch.labels.numpy(), np.nan)   # rows not learned: as unlabelled
            self.hedge.learn(np.nan_to_num(online, nan=0.5), probabilities(self.model, batch), labels)

    def meta(self) -> dict:
        """What each published online version carries about fusion."""
        if self.hedge is None or self.version is None:
            return {}
        return {"fusion": {"strategy": "hedge", "w_online": self.hedge.weights["online"],
                           "offline_version": self.version}}

    def close(self, engine: DataFlowEngine, cancel: bool = False) -> None:
        """Wait for the retraining in progress and publish it (the engine has stopped: no rebase);
        with `cancel` (a stop request: exit promptly), stop it at its next micro-batch instead and
        publish nothing."""
        self.runner.close(wait=True, cancel=cancel)
        pending = self.pending
        if pending is not None and (pending.cancelled() or isinstance(pending.exception(), OfflineCancelled)):
            self.pending, self.cancelled = None, self.cancelled + 1
            return
        self.poll(engine, apply=False)
