"""`OnlineTrainer`: predict-then-learn over a stream of micro-batches (prequential evaluation).

`learn(batch)` checks the batch (dense columns, labels 0/1/NaN for the BCE loss: a bad batch raises
ValueError before anything changes), runs ONE training forward (new ids are admitted), records its
predictions - made with the weights as they were before this batch - in `PrequentialMetrics`, then
takes one gradient step: the dense parameters with a torch optimizer, the table rows with their
row-wise optimizers. A batch whose loss or any gradient is not finite is skipped: no parameter or
row changes (ids first seen in it keep the fresh rows admission gave them), it is counted in
`skipped_batches` and logged. `predict(batch)` scores without inserting or learning.

`learn_stream(units)` learns a stream of units (chunks cut into micro-batches) and survives bad
batches: one that fails its check or raises while learning is counted in `failed_batches`, logged
and reported in its step (`error`), and the stream goes on. For the fused FM it resolves the ids
of later batches in a worker thread meanwhile (`freshrec.train.lookahead`).

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import OnlineFM
>>> trainer = OnlineTrainer(OnlineFM([FeatureSpec("user_id", FieldKind.CATEGORICAL)]))
>>> batch = Batch(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)),
...               dense=torch.zeros(2, 0), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.zeros(2, dtype=torch.float64))
>>> step = trainer.learn(batch)
>>> step["rows"], step["skipped"], trainer.metrics.summary()["rows"]
(2, False, 2)
>>> p = trainer.predict(batch); bool(p[0] > p[1])
True
>>> bad = Batch(batch.sparse, batch.dense, torch.tensor([1.0, 7.0]), batch.ts)
>>> unit = Unit([bad, batch])
>>> [step.get("error") for _, steps, _ in trainer.learn_stream([unit]) for step in steps]
['labels must be 0, 1 or NaN for the bce loss, not 7.0', None]
>>> trainer.failed_batches
1
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.metrics import PrequentialMetrics, logloss
from freshrec.models.base import OnlineModel, training_loss
from freshrec.models.fm import OnlineFM
from freshrec.train.fm_fast import FastFM, Resolved, plain_adagrad
from freshrec.train.lookahead import Prepared, UnitEnd, lookahead

log = logging.getLogger(__name__)

FLUSH_ROWS = 4096
LOOKAHEAD_BATCHES = 32
LOOKAHEAD_MIN_ROWS = 64   # smaller batches learn faster in one thread than handed between two
DENSE_OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass(frozen=True)
class TrainerConfig:
    """- `dense_optimizer`: "adagrad", "adam" or "sgd", for the model's torch parameters;
    - `dense_lr`: its learning rate (None: the model config's `lr`);
    - `seed`: torch's global seed, set at the first `learn` (dropout and the like);
    - `fused`: train an `OnlineFM` (BCE, dense Adagrad) with the fused numba step
      (`freshrec.train.fm_fast.FastFM`: the same step as the module's, several times faster);
    - `bins`, `window_events`, `window_seconds`: the `PrequentialMetrics` settings;
    - `evict_every`: rows learned between two evictions from the tables that have a TTL or a
      capacity (`learn_stream`, at the end of the unit that reaches it: a point fixed by the stream,
      so a restored trainer evicts where an uninterrupted one does)."""

    dense_optimizer: str = "adagrad"
    dense_lr: float | None = None
    seed: int = 0
    fused: bool = True
    bins: int = 4096
    window_events: int | None = 100_000
    window_seconds: float | None = None
    evict_every: int = 100_000

    def __post_init__(self) -> None:
        if self.evict_every < 1:
            raise ValueError(f"evict_every must be >= 1, not {self.evict_every}")
        if self.dense_optimizer not in DENSE_OPTIMIZERS:
            raise ValueError(f"dense_optimizer {self.dense_optimizer!r} is not one of {tuple(DENSE_OPTIMIZERS)}")
        if self.dense_lr is not None and not self.dense_lr > 0:
            raise ValueError(f"dense_lr must be > 0, not {self.dense_lr}")


@dataclass
class Unit:
    """Micro-batches learned together (a chunk of the stream); `hold`: `learn_stream` yields it with
    nothing of a later unit touched yet (a checkpoint or a publish may follow)."""

    batches: Sequence[Batch]
    hold: bool = False


class OnlineTrainer:
    """Trains `model` online, one micro-batch at a time; owns the dense optimizer and the metrics."""

    def __init__(self, model: OnlineModel, config: TrainerConfig | None = None) -> None:
        self.model = model
        self.config = config or TrainerConfig()
        self._optimizer: torch.optim.Optimizer | None = None
        self._fused: FastFM | None = None
        self._metrics: PrequentialMetrics | None = None
        self.batches = self.skipped_batches = self.skipped_rows = self.failed_batches = 0
        self._hold: threading.Event | None = None
        self.rows_since_evict = 0                # rows learned by learn_stream since the last eviction
        self.newest_ts: float | None = None      # the newest event time learned by learn_stream
        self.squared_error = 0.0
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    @property
    def metrics(self) -> PrequentialMetrics:
        """The prequential metrics of every learned batch (built on first use). Scores are handed
        to it in blocks of about `FLUSH_ROWS` rows, in stream order; reading it flushes the rest."""
        self._flush()
        return self._metrics

    def _flush(self) -> None:
        """Hand the pending scores to the metrics (built on first use) in one update."""
        if self._metrics is None:
            c = self.config
            self._metrics = PrequentialMetrics(c.bins, c.window_events, c.window_seconds)
        if self._pending:
            columns = [np.concatenate(column) for column in zip(*self._pending)]
            self._pending, self._pending_rows = [], 0
            self._metrics.update(*columns)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The dense optimizer (built at the first `learn`; None for a model without dense parameters)."""
        return self._optimizer

    def start(self) -> None:
        """Seed torch and build the dense optimizer (the first `learn` does it; a restored
        trainer calls it before loading the optimizer's state)."""
        torch.manual_seed(self.config.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.config.dense_lr or self.model.config.lr
        if params:
            self._optimizer = DENSE_OPTIMIZERS[self.config.dense_optimizer](params, lr=lr)
        self._fused = fused_step(self.model, self._optimizer) if self.config.fused else None

    @property
    def fused(self) -> bool:
        """Whether `learn` takes the fused FM step (see `TrainerConfig.fused`)."""
        return self._fused is not None

    def learn(self, batch: Batch) -> dict:
        """Score `batch`, record the scores, then learn from it. Returns `rows`, `loss` (on the
        fused FM step the labels' log loss, without ordinal terms), `skipped` and `predictions`
        (the pre-update scores, a float32 tensor)."""
        if self.batches == 0 and self._optimizer is None:
            self.start()
        self.check(batch)
        self.batches += 1
        if self._fused is not None:
            return self._learn_fused(batch)
        return self._learn_module(batch)

    def check(self, batch: Batch) -> None:
        """ValueError for a batch this model cannot learn: other dense columns than the model's,
        or (BCE) a label that is not 0, 1 or NaN."""
        self.model.check(batch)
        if self.model.config.loss == "bce" and len(batch):
            labels = batch.labels
            if not bool(((labels == 0) | (labels == 1) | torch.isnan(labels)).all()):
                bad = labels[(labels != 0) & (labels != 1) & ~torch.isnan(labels)][0]
                raise ValueError(f"labels must be 0, 1 or NaN for the bce loss, not {float(bad)}")

    def hold(self) -> None:
        """Ask a running `learn_stream` to yield its next unit held (for a publish): thread-safe."""
        if self._hold is not None:
            self._hold.set()

    def learn_stream(self, units: Iterable[Unit], ahead: int = LOOKAHEAD_BATCHES
                     ) -> Iterator[tuple[Unit, list[dict], bool]]:
        """Learn every batch of every unit in order; after a unit's last batch yield (unit, its steps,
        held). While the caller holds a `held` unit (a unit with `hold`, or after `hold()`), the model
        has seen exactly the units so far. A batch that fails gets a step with `error` (and
        `predictions` None), counted in `failed_batches`; an error of `units` itself is raised.
        The lookahead thread is used for the fused FM when the first unit's batches average at least
        `LOOKAHEAD_MIN_ROWS` rows (handing tiny batches between threads costs more than it saves)."""
        if self.batches == 0 and self._optimizer is None:
            self.start()
        units = iter(units)
        if (first := next(units, None)) is None:
            return
        units = itertools.chain([first], units)
        rows = sum(len(b) for b in first.batches) / max(len(first.batches), 1)
        if self._fused is None or rows < LOOKAHEAD_MIN_ROWS:   # one thread: no lookahead
            for unit in units:
                steps = [self._learn_safely(batch) for batch in unit.batches]
                self._evict_when_due(unit)
                yield unit, steps, True
            return
        self._hold = threading.Event()
        resolve, steps = self._fused.resolver(), []

        def prepare(batch: Batch) -> Resolved:
            self.check(batch)
            return resolve(batch)
        try:
            for item in lookahead(units, prepare, ahead, self._hold, hold_at=self._eviction_clock()):
                if isinstance(item, UnitEnd):
                    self._evict_when_due(item.unit)   # where the worker holds
                    yield item.unit, steps, item.held
                    steps = []
                else:
                    steps.append(self._learn_prepared(item))
        finally:
            self._hold = None

    def _evicts(self) -> bool:
        return any(t.config.ttl_seconds is not None or t.config.capacity is not None
                   for t in self.model.tables.values())

    def _eviction_clock(self) -> Callable[[Unit], bool] | None:
        """For the lookahead worker: True at the end of each unit where `_evict_when_due` evicts
        (the same count, from the same start), so that the worker holds there."""
        if not self._evicts():
            return None
        rows = self.rows_since_evict

        def due(unit: Unit) -> bool:
            nonlocal rows
            rows, evict = self._count_towards_eviction(rows, unit)
            return evict
        return due

    def _count_towards_eviction(self, rows: int, unit: Unit) -> tuple[int, bool]:
        """The rows counted after `unit`, and whether an eviction is due there (the count restarts)."""
        rows += sum(len(b) for b in unit.batches)
        return (0, True) if rows >= self.config.evict_every else (rows, False)

    def _evict_when_due(self, unit: Unit) -> None:
        """After a unit: every `evict_every` rows, evict from each table with a TTL or a capacity,
        as of the newest event time learned."""
        if not self._evicts():
            return
        for batch in unit.batches:
            if len(batch):
                newest = float(batch.ts.max())
                self.newest_ts = newest if self.newest_ts is None else max(self.newest_ts, newest)
        self.rows_since_evict, due = self._count_towards_eviction(self.rows_since_evict, unit)
        if due and self.newest_ts is not None:
            freed = sum(table.evict(self.newest_ts) for table in self.model.tables.values())
            log.info("evicted %d rows (event time %s)", freed, self.newest_ts)

    def _learn_prepared(self, item: Prepared) -> dict:
        if item.error is not None:
            return self._fail(item.batch, item.error)
        self.batches += 1
        try:
            return self._learn_fused(item.batch, item.value)
        except Exception as error:
            return self._fail(item.batch, error)

    def _learn_safely(self, batch: Batch) -> dict:
        try:
            return self.learn(batch)
        except Exception as error:
            self.model.discard_gradients()
            self.model.zero_grad(set_to_none=True)
            return self._fail(batch, error)

    def _fail(self, batch: Batch, error: Exception) -> dict:
        self.failed_batches += 1
        log.warning("batch of %d rows not learned: %s", len(batch), error)
        return {"rows": len(batch), "loss": math.nan, "skipped": True, "predictions": None, "error": str(error)}

    def _learn_module(self, batch: Batch) -> dict:
        self.model.zero_grad(set_to_none=True)
        output = self.model(batch, train=True)
        value = training_loss(self.model, output, batch)
        value.backward()
        if not (math.isfinite(float(value.detach())) and self._gradients_finite()):
            return self._skip(batch, float(value.detach()))
        if self._optimizer is not None:
            self._optimizer.step()
        self.model.apply_gradients()
        predictions = self._score(output.detach())
        self._record(predictions, batch)
        return {"rows": len(batch), "loss": float(value.detach()), "skipped": False, "predictions": predictions}

    def _learn_fused(self, batch: Batch, resolved: Resolved | None = None) -> dict:
        """The fused step on `batch` (already `resolved` by `learn_stream`'s worker, or not)."""
        skipped = self._fused.skipped
        probabilities = self._fused.learn(batch) if resolved is None else self._fused.learn_resolved(resolved)
        value = logloss(probabilities.numpy(), batch.labels.numpy())  # the labels' term, NaN without any
        if self._fused.skipped > skipped:
            return self._skip(batch, value)
        self._record(probabilities, batch)
        return {"rows": len(batch), "loss": value, "skipped": False, "predictions": probabilities}

    def _gradients_finite(self) -> bool:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grads += [g for g in self.model.served_gradients() if g is not None]
        # one check for all: a NaN or an infinity anywhere makes the sum of sums non-finite
        return not grads or bool(torch.isfinite(torch.stack([g.sum() for g in grads]).sum()))

    def _skip(self, batch: Batch, value: float) -> dict:
        self.model.discard_gradients()
        self.model.zero_grad(set_to_none=True)
        self.skipped_batches += 1
        self.skipped_rows += len(batch)
        log.warning("skipped batch %d (%d rows): loss %s or a gradient is not finite",
                    self.batches, len(batch), value)
        return {"rows": len(batch), "loss": value, "skipped": True, "predictions": None}

    def _score(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output) if self.model.config.loss == "bce" else output

    def _record(self, predictions: torch.Tensor, batch: Batch) -> None:
        labels = batch.labels.numpy()
        if self.model.config.loss == "bce":
            self._pending.append((predictions.numpy(), labels, batch.ts.numpy()))
            self._pending_rows += len(labels)
            if self._pending_rows >= FLUSH_ROWS:
                self._flush()
        else:
            known = ~np.isnan(labels)
            self.squared_error += float(((predictions.numpy()[known] - labels[known]) ** 2).sum())

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Probabilities `[B]` (predictions for `loss="mse"`); no id is inserted, nothing learned."""
        return self._score(self.model(batch, train=False))

    def report(self) -> dict:
        """Overall, window and last-20% figures, skipped batches, live ids and the model name."""
        metrics = self.metrics
        summary, tail = metrics.summary(), metrics.tail(0.2)
        summary["scored_rows"] = summary.pop("rows")
        return {**summary, "auc_window": metrics.window()["auc"],
                "auc_last20": tail["auc"], "logloss_last20": tail["logloss"],
                "skipped_batches": self.skipped_batches, "failed_batches": self.failed_batches,
                "live_ids": self.model.live_ids,
                "evicted_ids": sum(table.evicted for table in self.model.tables.values())}


def fused_step(model: OnlineModel, optimizer: torch.optim.Optimizer | None) -> FastFM | None:
    """A `FastFM` over `model`'s weights when its step is the fused one's (an `OnlineFM` itself,
    not a subclass, with the BCE loss, whose dense parameters use plain Adagrad), else None."""
    if type(model) is not OnlineFM or model.config.loss != "bce" or not plain_adagrad(optimizer):
        return None
    return FastFM(model, optimizer)

