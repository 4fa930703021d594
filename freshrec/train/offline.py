"""`OfflineTrainer`: full retraining over a time range of the log, with a holdout and early stopping;
`OfflineRunner` runs it in a worker thread so that the online trainer never waits.

`learn(batches)` takes the range as batches in time order and joins their rows. The last
`holdout_fraction` of the rows (the latest slice in time) is held out; the model never learns it.
The rest is learned for up to `epochs` epochs by an `OnlineTrainer` (its dense optimizer, row-wise
optimizers and skipping of non-finite batches), in micro-batches of `batch_size` rows; with
`shuffle`, each epoch first permutes the training rows across the whole range (the permutation of
epoch e comes from `numpy.random.default_rng([seed, e])`, so a run is repeatable bit for bit).
After each epoch the holdout is scored (`predict`: no id inserted) and its logloss judged:
training stops once it has not improved on the best epoch for `patience` epochs, and the best
epoch's model is returned (a copy is kept while later epochs go on). Epoch 0 is the starting
model, scored before any training: a fresh `build()`, or, with `warm_start`, a copy of
`warm_from` (which is never changed) holding its dense weights and every table's rows, optimizer
state and bookkeeping. If the starting model stays the best, it is what comes back. Without a
labelled holdout row, every epoch is run and the last is returned.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import ModelConfig, build_model
>>> sim = Simulator(SimulatorConfig(n_users=200, n_items=100, batch_size=1000, total_events=3000))
>>> specs = default_specs(sim.fields, dim=4)
>>> batches = [FeaturePipeline(specs).build(chunk) for chunk in sim]
>>> offline = OfflineTrainer(lambda: build_model("fm", specs, ModelConfig(dim=4)), OfflineConfig(epochs=2))
>>> result = offline.learn(batches)
>>> result.rows, result.holdout_rows, len(result.history), result.best_epoch
(3000, 300, 3, 2)
>>> bool(result.holdout_logloss < result.history[0][0])    # better than the untrained model
True
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.metrics import auc, logloss
from freshrec.models.base import OnlineModel
from freshrec.train.online import OnlineTrainer, TrainerConfig

if TYPE_CHECKING:
    from freshrec.features import FeaturePipeline
    from freshrec.log import EventLog

__all__ = ["OfflineCancelled", "OfflineConfig", "OfflineResult", "OfflineRunner", "OfflineTrainer", "copy_model"]


@dataclass(frozen=True)
class OfflineConfig:
    """- `epochs`: the most passes over the training rows; `batch_size`: rows per step;
    - `holdout_fraction`: the latest share of the rows held out to judge epochs (0: none);
    - `patience`: epochs without a better holdout logloss before stopping;
    - `seed`: seeds the shuffles (torch's seed is `TrainerConfig.seed`);
    - `warm_start`: start from a copy of `warm_from` when one is given;
    - `shuffle`: permute the training rows each epoch (False: time order);
    - `window`: seconds of event time read from the log, back from its newest event (None: the
      whole log; `OfflineSchedule`)."""

    epochs: int = 3
    batch_size: int = 512
    holdout_fraction: float = 0.1
    patience: int = 1
    seed: int = 0
    warm_start: bool = True
    shuffle: bool = True
    window: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"epochs, batch_size and patience must be >= 1: {self}")
        if self.window is not None and not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, not {self.window}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), not {self.holdout_fraction}")


@dataclass(frozen=True)
class OfflineResult:
    """What `OfflineTrainer.learn` made: the best epoch's `model` (in eval mode), the epochs run
    and the best one (0: the starting model), that model's holdout logloss and AUC (NaN without a
    labelled holdout), the rows of the range, seconds of wall-clock and of CPU (`process_time`:
    every thread of the process) it took, the rows held out, and `history`: (holdout logloss,
    holdout AUC) of epochs 0 (before training), 1, ..., `epochs_run`."""

    model: OnlineModel
    epochs_run: int
    best_epoch: int
    holdout_logloss: float
    holdout_auc: float
    rows: int
    seconds: float
    cpu_seconds: float
    holdout_rows: int = 0
    history: tuple[tuple[float, float], ...] = ()


def copy_model(model: OnlineModel, build: Callable[[], OnlineModel]) -> OnlineModel:
    """A fresh `build()` holding `model`'s dense weights and each table's full state (rows,
    optimizer state, bookkeeping, admission sketch, generator); `model` is only read.

    >>> from freshrec.events.event import FieldKind
    >>> from freshrec.features import FeatureSpec
    >>> from freshrec.models import OnlineFM
    >>> build = lambda: OnlineFM([FeatureSpec("user_id", FieldKind.CATEGORICAL)])
    >>> model = build(); _ = model.tables["fm"].slots(np.array([7, 9]), now=0.0)
    >>> copy = copy_model(model, build); copy.tables["fm"].live, copy is model
    (2, False)
    """
    copy = build()
    if set(copy.tables) != set(model.tables) or any(
            copy.tables[name].config != table.config for name, table in model.tables.items()):
        raise ValueError(f"{type(model).__name__} has other tables than the model `build` makes")
    copy.load_state_dict(model.state_dict(), strict=True)
    for name, table in model.tables.items():
        copy.tables[name].load_state_dict(table.state_dict())
    return copy.train(model.training)


def _concat(batches: Sequence[Batch]) -> Batch:
    """The rows of `batches`, in order, as one batch (same keys and dense columns required)."""
    first = batches[0]
    keys = first.sparse.keys()
    if any(b.sparse.keys() != keys or b.dense_keys != first.dense_keys for b in batches):
        raise ValueError("the batches have different sparse keys or dense columns")
    if len({b.targets is None for b in batches}) > 1:
        raise ValueError("some batches have targets and some do not")
    if len(batches) == 1:
        return first
    sparse = first.sparse
    if keys:
        lengths = torch.cat([b.sparse.lengths().view(len(keys), -1) for b in batches], dim=1)
        parts = [b.sparse.to_dict() for b in batches]
        values = torch.cat([part[key].values for key in keys for part in parts])
        sparse = SparseFeatures(keys, values, lengths.reshape(-1), check=False)
    targets = None if first.targets is None else torch.cat([b.targets for b in batches])
    return Batch(sparse, torch.cat([b.dense for b in batches]), torch.cat([b.labels for b in batches]),
                 torch.cat([b.ts for b in batches]), first.dense_keys, targets)


def _take(batch: Batch, rows: np.ndarray) -> Batch:
    """The rows `rows` of `batch`, in that order (one vectorised gather of the jagged ids)."""
    index = torch.from_numpy(np.ascontiguousarray(rows, np.int64))
    sparse, keys = batch.sparse, batch.sparse.keys()
    if keys:
        lengths = sparse.lengths().view(len(keys), -1).long()
        starts = (torch.cumsum(lengths.reshape(-1), 0) - lengths.reshape(-1)).view(len(keys), -1)
        chosen, begin = lengths[:, index].reshape(-1), starts[:, index].reshape(-1)
        shift = begin - (torch.cumsum(chosen, 0) - chosen)  # where each bag starts, minus where it lands
        at = torch.repeat_interleave(shift, chosen) + torch.arange(int(chosen.sum()))
        sparse = SparseFeatures(keys, sparse.values()[at], chosen.to(torch.int32), check=False)
    targets = None if batch.targets is None else batch.targets[index]
    return Batch(sparse, batch.dense[index], batch.labels[index], batch.ts[index], batch.dense_keys, targets)


def _holdout_rows(rows: int, fraction: float) -> int:
    """Rows held out: `ceil(rows * fraction)`, leaving at least one row to learn."""
    return min(math.ceil(rows * fraction), rows - 1)


class OfflineCancelled(RuntimeError):
    """A retraining stopped by `OfflineTrainer.cancel` before it finished."""


class OfflineTrainer:
    """Retrains a model built by `build` over a range of batches; see the module docstring.

    `build` must make the same kind of model as the online one (same tables), freshly seeded:
    e.g. `lambda: build_model(name, specs, config)`. `trainer` configures the `OnlineTrainer`
    that takes the steps (dense optimizer and lr, torch's seed). Setting `cancel` (from any thread)
    stops a retraining in progress at its next micro-batch: it raises `OfflineCancelled`."""

    def __init__(self, build: Callable[[], OnlineModel], config: OfflineConfig | None = None,
                 trainer: TrainerConfig | None = None) -> None:
        self.build = build
        self.config = config or OfflineConfig()
        self.trainer = trainer or TrainerConfig()
        self.cancel = threading.Event()

    def learn(self, batches: Sequence[Batch], warm_from: OnlineModel | None = None) -> OfflineResult:
        """Retrain over `batches` (in time order), starting from a copy of `warm_from` when given
        and `warm_start` is on, else from a fresh `build()`."""
        return self._learn(batches, self._start(warm_from))

    def learn_log(self, log: EventLog, pipeline: FeaturePipeline, start: float | None = None,
                  end: float | None = None, warm_from: OnlineModel | None = None) -> OfflineResult:
        """`learn` over the log's events with `start <= ts < end` (event time), built by `pipeline`."""
        return self.learn(list(log.batches(pipeline, start, end, self.config.batch_size)), warm_from)

    def _start(self, warm_from: OnlineModel | None) -> OnlineModel:
        if warm_from is not None and self.config.warm_start:
            return copy_model(warm_from, self.build)
        return self.build()

    def _learn(self, batches: Sequence[Batch], model: OnlineModel) -> OfflineResult:
        """Train `model` (owned: it is changed) over `batches`; returns the best epoch's model."""
        wall, cpu = time.perf_counter(), time.process_time()
        if model.config.loss != "bce":
            raise ValueError("OfflineTrainer judges epochs by holdout logloss: it needs a model with loss='bce'")
        batches = [batch for batch in batches if len(batch)]
        whole = _concat(batches) if batches else None
        if whole is None or len(whole) < 2:
            raise ValueError("OfflineTrainer needs at least 2 rows to learn and hold out")
        held = _holdout_rows(len(whole), self.config.holdout_fraction)
        train = _take(whole, np.arange(len(whole) - held))
        holdout = _take(whole, np.arange(len(whole) - held, len(whole)))
        judged = bool((~torch.isnan(holdout.labels)).any())
        model, history, best = self._epochs(OnlineTrainer(model, self.trainer), train, holdout, judged)
        loss, area = history[best]
        return OfflineResult(model.eval(), len(history) - 1, best, loss, area, len(whole),
                             time.perf_counter() - wall, time.process_time() - cpu, held, tuple(history))

    def _epochs(self, trainer: OnlineTrainer, train: Batch, holdout: Batch,
                judged: bool) -> tuple[OnlineModel, list[tuple[float, float]], int]:
        """Run the epochs with early stopping: (the best model, the holdout history, best epoch)."""
        model, kept = trainer.model, None
        history, best = [self._score(model, holdout)], 0
        for epoch in range(1, self.config.epochs + 1):
            if judged and best == epoch - 1:
                kept = copy_model(model, self.build)  # the best so far; the next epoch changes `model`
            self._epoch(trainer, train, epoch)
            history.append(self._score(model, holdout))
            if not judged or history[epoch][0] < history[best][0]:
                best = epoch
            elif epoch - best >= self.config.patience:
                break
        return (model if best == len(history) - 1 else kept), history, best

    def _epoch(self, trainer: OnlineTrainer, train: Batch, epoch: int) -> None:
        if self.config.shuffle:
            train = _take(train, np.random.default_rng([self.config.seed, epoch]).permutation(len(train)))
        trainer.model.train()
        for batch in train.split(self.config.batch_size):
            if self.cancel.is_set():
                raise OfflineCancelled(f"retraining cancelled in epoch {epoch}")
            trainer.learn(batch)

    def _score(self, model: OnlineModel, holdout: Batch) -> tuple[float, float]:
        """(logloss, AUC) of `model` on the holdout; NaN for what cannot be computed."""
        if not len(holdout):
            return math.nan, math.nan
        model.eval()
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(model(b, train=False)) for b in holdout.split(self.config.batch_size)])
        p, y = p.double().numpy(), holdout.labels.numpy()
        return logloss(p, y), auc(p, y)


class OfflineRunner:
    """Runs `trainer` in one worker thread: `submit` returns a `Future[OfflineResult]` at once.

    The online trainer's thread keeps learning meanwhile: the numba kernels of the tables (compiled
    with `nogil=True`) and torch's ops release the GIL, so the two threads hold it only for the
    Python between them (expect some slow-down of the online thread on a machine with few cores).
    Jobs run one at a time, in the order submitted (`busy` says whether one is still pending).

    `submit` copies `warm_from` in the calling thread, before it returns: call it from the thread
    that trains `warm_from` (a table has one writer), and the copy is consistent. When a result is
    ready, `on_done(result)` runs in the worker thread, before the future completes (an exception
    it raises becomes the future's); it may publish the offline snapshot, but must not change the
    online model: `freshrec.fusion.rebase` belongs in the online trainer's thread, once the future
    is done. Models with dropout draw from torch's global generator, which both threads share
    (and `OnlineTrainer` seeds at its start): with dropout, neither run is repeatable while both run.
    """

    def __init__(self, trainer: OfflineTrainer,
                 on_done: Callable[[OfflineResult], None] | None = None) -> None:
        self.trainer = trainer
        self.on_done = on_done
        self._pool: ThreadPoolExecutor | None = None
        self._last: Future[OfflineResult] | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a submitted retraining has not finished yet."""
        return self._last is not None and not self._last.done()

    def submit(self, batches: Sequence[Batch], warm_from: OnlineModel | None = None) -> Future[OfflineResult]:
        """Retrain over `batches` in the worker (`OfflineTrainer.learn`); the batches must not
        change until the future is done."""
        start = self.trainer._start(warm_from)
        return self._submit(lambda: batches, start)

    def submit_log(self, log: EventLog, pipeline: FeaturePipeline, start: float | None = None,
                   end: float | None = None, warm_from: OnlineModel | None = None) -> Future[OfflineResult]:
        """`OfflineTrainer.learn_log` in the worker, which also reads the log: give it an
        `EventLog` of its own (an instance is used by one thread at a time)."""
        size = self.trainer.config.batch_size
        return self._submit(lambda: list(log.batches(pipeline, start, end, size)), self.trainer._start(warm_from))

    def _submit(self, read: Callable[[], Sequence[Batch]], model: OnlineModel) -> Future[OfflineResult]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="freshrec-offline")
            self._last = self._pool.submit(self._run, read, model)
            return self._last

    def _run(self, read: Callable[[], Sequence[Batch]], model: OnlineModel) -> OfflineResult:
        result = self.trainer._learn(read(), model)
        if self.on_done is not None:
            self.on_done(result)
        return result

    def close(self, wait: bool = True, cancel: bool = False) -> None:
        """Stop the worker after the jobs submitted (`wait`: until they are done; `cancel`: the one
        running stops at its next micro-batch with `OfflineCancelled`, the others do not start)."""
        if cancel:
            self.trainer.cancel.set()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel)

    def __enter__(self) -> OfflineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
