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
and reported in its step (`error`), and the stream goes on. The fused step (FM, LR:
`freshrec.train.fused`) learns each unit in one call, micro-batch by micro-batch, while a worker
thread resolves the ids of the next units (`freshrec.train.lookahead`); a step then covers all the
micro-batches of a unit (`batches`), the rows of skipped ones scored NaN.

On a GPU (`TrainerConfig.device`) the model's dense parameters and table rows live there
(`OnlineModel.place`), micro-batches are copied ahead on a side stream from reused page-locked
buffers (`freshrec.train.staging`), and the forward may run in bf16 or fp16 (`precision`: torch
autocast; fp16 with a gradient scaler, whose overflowing steps are skipped but scored).

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
(2, 0, 2)
>>> p = trainer.predict(batch); bool(p[0] > p[1])
True
>>> bad = Batch(batch.sparse, batch.dense, torch.tensor([1.0, 7.0]), batch.ts)
>>> unit = Unit(bad, [1, 1])                  # a chunk of two micro-batches, the second one bad
>>> [step.get("error") for _, steps, _ in trainer.learn_stream([unit]) for step in steps]
[None, 'labels must be 0, 1 or NaN for the bce loss, not 7.0']
>>> trainer.failed_batches
1
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.metrics import PrequentialMetrics, logloss
from freshrec.models.base import OnlineModel, training_loss
from freshrec.train.dense_step import DenseAdagrad
from freshrec.train.fused import NOT_FINITE, FusedStep, ResolvedChunk, fused_model, plain_adagrad
from freshrec.train.lookahead import lookahead
from freshrec.train.staging import DeviceFeed

log = logging.getLogger(__name__)

FLUSH_ROWS = 4096
LOOKAHEAD_UNITS = 2
DENSE_OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_DEVICE_TYPES = frozenset({"cuda"})   # fp16 and its gradient scaler: GPUs (a CPU computes fp16 slowly)


@dataclass(frozen=True)
class TrainerConfig:
    """- `dense_optimizer`: "adagrad", "adam" or "sgd", for the model's torch parameters;
    - `dense_lr`: its learning rate (None: the model config's `lr`);
    - `seed`: torch's global seed, set at the first `learn` (dropout and the like);
    - `fused`: train an `OnlineFM` or a `LogisticRegression` (BCE, dense Adagrad) with the fused
      numba step (`freshrec.train.fused.FusedStep`: the same steps as the module's, a chunk of
      micro-batches per call);
    - `bins`, `window_events`, `window_seconds`: the `PrequentialMetrics` settings;
    - `evict_every`: rows learned between two evictions from the tables that have a TTL or a
      capacity (`learn_stream`, at the end of the unit that reaches it: a point fixed by the stream,
      so a restored trainer evicts where an uninterrupted one does);
    - `device`: where the model learns ("cpu", "cuda", "cuda:1"; the first `learn` places it);
    - `precision`: "fp32", "bf16" (autocast, CPU or GPU) or "fp16" (autocast with a gradient
      scaler, GPU only) for the forward; the fused step is fp32 on the CPU only."""

    dense_optimizer: str = "adagrad"
    dense_lr: float | None = None
    seed: int = 0
    fused: bool = True
    bins: int = 4096
    window_events: int | None = 100_000
    window_seconds: float | None = None
    evict_every: int = 100_000
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {tuple(PRECISIONS)}")
        device = torch.device(self.device)   # raises on a malformed name
        if self.precision == "fp16" and device.type not in FP16_DEVICE_TYPES:
            raise ValueError("precision fp16 needs a CUDA device (its gradient scaler); bf16 runs on the CPU too")
        if self.evict_every < 1:
            raise ValueError(f"evict_every must be >= 1, not {self.evict_every}")
        if self.dense_optimizer not in DENSE_OPTIMIZERS:
            raise ValueError(f"dense_optimizer {self.dense_optimizer!r} is not one of {tuple(DENSE_OPTIMIZERS)}")
        if self.dense_lr is not None and not self.dense_lr > 0:
            raise ValueError(f"dense_lr must be > 0, not {self.dense_lr}")


class MicroBatched:
    """A chunk of the stream, `whole` (None: nothing to learn), cut into micro-batches of `sizes`
    rows; `batches` cuts it (once, when asked: the fused step learns `whole` as it is)."""

    whole: Batch | None
    sizes: Sequence[int]

    @cached_property
    def batches(self) -> list[Batch]:
        return [] if self.whole is None else self.whole.split(list(self.sizes))


@dataclass
class Unit(MicroBatched):
    """Micro-batches learned together; `hold`: `learn_stream` yields it with nothing of a later unit
    touched yet (a checkpoint or a publish may follow). `Unit.of(batch, 512)` cuts by size."""

    whole: Batch | None
    sizes: Sequence[int]
    hold: bool = False

    @classmethod
    def of(cls, whole: Batch, size: int, window: float | None = None, hold: bool = False) -> Unit:
        """`whole` cut into micro-batches of `size` rows, or spanning less than `window` of event time."""
        return cls(whole, whole.sizes(size, window), hold)


class _Part(NamedTuple):
    """Rows of a unit learned in one fused call (`resolved`), or a micro-batch that failed (`error`)."""

    batch: Batch
    sizes: Sequence[int]
    resolved: ResolvedChunk | None
    error: Exception | None


class OnlineTrainer:
    """Trains `model` online, one micro-batch at a time; owns the dense optimizer and the metrics."""

    def __init__(self, model: OnlineModel, config: TrainerConfig | None = None) -> None:
        self.model = model
        self.config = config or TrainerConfig()
        self._optimizer: torch.optim.Optimizer | None = None
        self._fused: FusedStep | None = None
        self._dense: DenseAdagrad | None = None
        self._metrics: PrequentialMetrics | None = None
        self.batches = self.skipped_batches = self.skipped_rows = self.failed_batches = 0
        self._hold: threading.Event | None = None
        self.rows_since_evict = 0                # rows learned by learn_stream since the last eviction
        self.newest_ts: float | None = None      # the newest event time learned by learn_stream
        self.squared_error = 0.0
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._feed: DeviceFeed | None = None
        self._scaler: torch.amp.GradScaler | None = None

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

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (built at the first `learn`; None in other precisions)."""
        return self._scaler

    def start(self) -> None:
        """Seed torch and build the dense optimizer (the first `learn` does it; a restored
        trainer calls it before loading the optimizer's state)."""
        torch.manual_seed(self.config.seed)
        device = torch.device(self.config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.config.device!r} asked for, but torch sees no CUDA device here")
        if self.model.device != device:
            self.model.place(device)
        self._feed = DeviceFeed(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.config.dense_lr or self.model.config.lr
        if params:
            self._optimizer = DENSE_OPTIMIZERS[self.config.dense_optimizer](params, lr=lr)
        if self.config.precision == "fp16" and self._optimizer is not None:
            self._scaler = torch.amp.GradScaler(device.type)
        lean = self.config.fused and self.config.precision == "fp32"
        self._fused = fused_step(self.model, self._optimizer) if lean else None
        self._dense = DenseAdagrad(self._optimizer) if self._scaler is None and DenseAdagrad.fits(self._optimizer) \
            else None

    @property
    def fused(self) -> bool:
        """Whether `learn` takes the fused step (see `TrainerConfig.fused`)."""
        return self._fused is not None

    def learn(self, batch: Batch) -> dict:
        """Score `batch`, record the scores, then learn from it. Returns `rows`, `loss` (on the
        fused FM step the labels' log loss, without ordinal terms), `skipped` and `predictions`
        (the pre-update scores, a float32 tensor)."""
        if self.batches == 0 and self._optimizer is None:
            self.start()
        self.check(batch)
        if self._fused is not None:
            return self._learn_fused(self._fused.resolve(batch), [len(batch)])
        self.batches += 1
        return self._learn_module(batch, self._feed.one(batch))

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

    def learn_stream(self, units: Iterable[MicroBatched], ahead: int = LOOKAHEAD_UNITS
                     ) -> Iterator[tuple[MicroBatched, list[dict], bool]]:
        """Learn every micro-batch of every unit (a `Unit`, or anything with `whole`, `sizes`,
        `batches` and `hold`) in order; after a unit yield (unit, its steps, held). While the caller
        holds a `held` unit (a unit with `hold`, or after `hold()`), the model has seen exactly the
        units so far. A micro-batch that fails gets a step of its own with `error` (and
        `predictions` None), counted in `failed_batches`; an error of `units` itself is raised. The
        fused step resolves up to `ahead` units in a worker thread."""
        if self.batches == 0 and self._optimizer is None:
            self.start()
        if self._fused is None:   # one thread, one micro-batch at a time (copied ahead to a GPU)
            for unit in units:
                steps = [self._learn_safely(batch, moved) for batch, moved in self._feed(unit.batches)]
                self._evict_when_due(unit)
                yield unit, steps, True
            return
        self._hold = threading.Event()
        try:
            for item in lookahead(units, self._prepare, ahead, self._hold, hold_at=self._eviction_clock()):
                steps = [self._learn_part(part) for part in item.value]
                self._evict_when_due(item.unit)   # where the worker holds
                yield item.unit, steps, item.held
        finally:
            self._hold = None

    def _prepare(self, unit: MicroBatched) -> list[_Part]:
        """The fused parts of a unit (in the lookahead thread): the whole chunk resolved, or, when
        it fails its check, each micro-batch on its own (those that fail with their error)."""
        if unit.whole is None or not len(unit.whole):
            return []
        try:
            self.check(unit.whole)
            return [_Part(unit.whole, unit.sizes, self._fused.resolve(unit.whole), None)]
        except Exception:   # find the micro-batches at fault
            parts = []
            for batch in unit.batches:
                try:
                    self.check(batch)
                    parts.append(_Part(batch, [len(batch)], self._fused.resolve(batch), None))
                except Exception as error:
                    parts.append(_Part(batch, [len(batch)], None, error))
            return parts

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
        rows += len(unit.whole) if unit.whole is not None else 0
        return (0, True) if rows >= self.config.evict_every else (rows, False)

    def _evict_when_due(self, unit: Unit) -> None:
        """After a unit: every `evict_every` rows, evict from each table with a TTL or a capacity,
        as of the newest event time learned."""
        if not self._evicts():
            return
        if unit.whole is not None and len(unit.whole):
            newest = float(unit.whole.ts.max())
            self.newest_ts = newest if self.newest_ts is None else max(self.newest_ts, newest)
        self.rows_since_evict, due = self._count_towards_eviction(self.rows_since_evict, unit)
        if due and self.newest_ts is not None:
            freed = sum(table.evict(self.newest_ts) for table in self.model.tables.values())
            log.info("evicted %d rows (event time %s)", freed, self.newest_ts)

    def _learn_part(self, part: _Part) -> dict:
        """A fused part's step, or the failed step of its micro-batches."""
        if part.error is None:
            try:
                return self._learn_fused(part.resolved, part.sizes)
            except Exception as error:
                part = part._replace(error=error)
        self.batches += len(part.sizes)
        return self._fail(part.batch, part.error, len(part.sizes))

    def _learn_safely(self, batch: Batch, moved: Batch) -> dict:
        try:
            self.check(batch)
            self.batches += 1
            return self._learn_module(batch, moved)
        except Exception as error:
            self.model.discard_gradients()
            self.model.zero_grad(set_to_none=True)
            return self._fail(batch, error)

    def _fail(self, batch: Batch, error: Exception, batches: int = 1) -> dict:
        self.failed_batches += batches
        log.warning("%d micro-batches (%d rows) not learned: %s", batches, len(batch), error)
        return {"rows": len(batch), "batches": batches, "loss": math.nan, "skipped": batches, "predictions": None,
                "error": str(error)}

    def _learn_module(self, batch: Batch, moved: Batch) -> dict:
        """One step on `moved` (the batch on the model's device; `batch` on the host)."""
        self.model.zero_grad(set_to_none=True)
        output, value = self._forward(moved)
        overflow = False
        if self._scaler is None:
            value.backward()
        else:
            overflow = self._scaled_backward(value)
        if not (math.isfinite(float(value.detach())) and self._gradients_finite()):
            if self._scaler is not None:
                self._back_off(overflow)
            if overflow and math.isfinite(float(value.detach())):
                return self._overflow(batch, output)
            return self._skip(batch, float(value.detach()))
        self._step_dense()
        if self._scaler is not None:
            self._scaler.update()
        self.model.apply_gradients(_events(batch))
        predictions = self._score(output.detach().float()).cpu()
        self._record(predictions.numpy(), batch.labels.numpy(), batch.ts.numpy())
        return {"rows": len(batch), "batches": 1, "loss": float(value.detach()), "skipped": 0,
                "predictions": predictions}

    def _forward(self, moved: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The training forward on `moved` (on the model's device) in the configured precision:
        the output and the loss."""
        with self._autocast():
            output = self.model(moved, train=True)
            return output, training_loss(self.model, output.float(), moved)

    def _autocast(self) -> torch.autocast:
        dtype = PRECISIONS[self.config.precision]
        return torch.autocast(self.model.device.type, dtype=dtype, enabled=dtype is not None)

    def _scaled_backward(self, value: torch.Tensor) -> bool:
        """fp16: backward of the scaled loss, then the dense and the rows' gradients unscaled;
        True when a gradient overflowed."""
        self._scaler.scale(value).backward()
        self._scaler.unscale_(self._optimizer)
        inverse = 1.0 / self._scaler.get_scale()
        for grad in self.model.served_gradients():
            if grad is not None:
                grad.mul_(inverse)
        return not self._gradients_finite()

    def _back_off(self, overflow: bool) -> None:
        """The scaler's update after a step not taken: it saw the dense gradients only, so where only
        the rows' overflowed it would keep its scale (and every later step overflow alike): back off
        as it does on an overflow of its own (the scale shrunk, the count towards growing it restarted)."""
        scale = self._scaler.get_scale()
        self._scaler.update()
        if overflow and self._scaler.get_scale() >= scale:
            shrunk = scale * self._scaler.get_backoff_factor()
            self._scaler.load_state_dict({**self._scaler.state_dict(), "scale": shrunk, "_growth_tracker": 0})

    def _overflow(self, batch: Batch, output: torch.Tensor) -> dict:
        """An fp16 step whose scaled gradients overflowed: scored, not learned (the scaler shrinks)."""
        self.model.discard_gradients()
        self.model.zero_grad(set_to_none=True)
        self.skipped_batches += 1
        self.skipped_rows += len(batch)
        predictions = self._score(output.detach().float()).cpu()
        self._record(predictions.numpy(), batch.labels.numpy(), batch.ts.numpy())
        return {"rows": len(batch), "batches": 1, "loss": math.nan, "skipped": 1, "predictions": predictions}

    def _learn_fused(self, resolved: ResolvedChunk, sizes: Sequence[int]) -> dict:
        """The fused step on a resolved chunk cut into micro-batches of `sizes` rows: one step for
        them all (`predictions` NaN in the rows of skipped micro-batches; None if all were)."""
        batch = resolved.batch
        probabilities, outcome = self._fused.learn_resolved(resolved, sizes)
        self.batches += len(outcome)
        skipped = outcome == NOT_FINITE
        scored, labels, ts = probabilities, batch.labels.numpy(), batch.ts.numpy()   # the rows learned
        if skipped.any():
            kept = np.repeat(~skipped, sizes)
            self.skipped_batches += int(skipped.sum())
            self.skipped_rows += int((~kept).sum())
            log.warning("skipped %d of %d micro-batches (%d rows) up to batch %d: a gradient is not finite",
                        skipped.sum(), len(outcome), (~kept).sum(), self.batches)
            probabilities[~kept] = np.nan
            scored, labels, ts = probabilities[kept], labels[kept], ts[kept]
        step = {"rows": len(batch), "batches": len(outcome), "loss": logloss(scored, labels),  # NaN without labels
                "skipped": int(skipped.sum()), "predictions": None}
        if len(scored):
            step["predictions"] = torch.from_numpy(probabilities)
            self._record(scored, labels, ts)
        return step

    def _gradients_finite(self) -> bool:
        grads = [g for g in self.model.served_gradients() if g is not None]
        if self._dense is None:
            grads += [p.grad for p in self.model.parameters() if p.grad is not None]
        elif not self._dense.finite():
            return False
        # one check for all: a NaN or an infinity anywhere makes the sum of sums non-finite
        return not grads or bool(torch.isfinite(torch.stack([g.sum() for g in grads]).sum()))

    def _step_dense(self) -> None:
        """The dense parameters' step: in numba where `DenseAdagrad` fits, else the optimizer's."""
        if self._dense is not None:
            self._dense.step()
        elif self._optimizer is not None:
            self._optimizer.step()

    def _skip(self, batch: Batch, value: float) -> dict:
        self.model.discard_gradients()
        self.model.zero_grad(set_to_none=True)
        self.skipped_batches += 1
        self.skipped_rows += len(batch)
        log.warning("skipped batch %d (%d rows): loss %s or a gradient is not finite",
                    self.batches, len(batch), value)
        return {"rows": len(batch), "batches": 1, "loss": value, "skipped": 1, "predictions": None}

    def _score(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output) if self.model.config.loss == "bce" else output

    def _record(self, predictions: np.ndarray, labels: np.ndarray, ts: np.ndarray) -> None:
        if self.model.config.loss == "bce":
            self._pending.append((predictions, labels, ts))
            self._pending_rows += len(labels)
            if self._pending_rows >= FLUSH_ROWS:
                self._flush()
        else:
            known = ~np.isnan(labels)
            self.squared_error += float(((predictions[known] - labels[known]) ** 2).sum())

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Probabilities `[B]` (predictions for `loss="mse"`) on the host; no id is inserted,
        nothing learned."""
        with self._autocast():
            output = self.model(batch.to(self.model.device), train=False)
        return self._score(output.float()).cpu()

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


def _events(batch: Batch) -> int:
    """The events the training loss averages: the labelled rows (the graded ones when none is)."""
    labelled = int((~torch.isnan(batch.labels)).sum())
    if labelled == 0 and batch.targets is not None:
        labelled = int((~torch.isnan(batch.targets)).sum())
    return max(labelled, 1)


def fused_step(model: OnlineModel, optimizer: torch.optim.Optimizer | None) -> FusedStep | None:
    """A `FusedStep` over `model`'s weights when its step is the fused one's (`fused_model`, whose
    dense parameters use plain Adagrad), else None."""
    if not fused_model(model) or not plain_adagrad(optimizer):
        return None
    return FusedStep(model, optimizer)
