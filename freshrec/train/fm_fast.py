"""`FastFM`: the factorization machine's predict-then-learn step fused into numba kernels.

The same model as `freshrec.models.OnlineFM`, on its own weights: one shared table (`model.table`,
width k + 1: column 0 the linear weight w, columns 1..k the factors v), `model.dense_weight` [D]
and `model.bias`. For each row of a batch,

    logit = bias + dense_weight . x + sum_i w_i + 0.5 * sum_d [(sum_i v_id)^2 - sum_i v_id^2]

over every id occurrence i of every sparse feature (slot -1, an id without a row, adds nothing).
`learn(batch)` scores the batch with the weights as they were before it (the prequential
prediction, returned), then takes one step on the mean BCE over its labelled rows: per
occurrence dL/dw_i = g and dL/dv_i = g * (S - v_i), with S = sum_i v_i of its row and
g = (p - y) / n. A model with `ordinal_levels` (and a batch with `targets`) adds to g, per row
with a target, sum_l (sigmoid(logit - offset_l) - [target >= l]) / (rows with a target), and
steps the offsets (`freshrec.models.base.training_loss`). The work is split by what it depends on:

- resolving (`Resolved`): the ids' table slots (admitting new ids) and the distinct slots of the
  batch in order of first occurrence (no sort) - nothing that depends on the rows' values, so
  `OnlineTrainer.learn_stream` does it for later batches in a worker thread while this one learns;
- learning (`learn_resolved`): copy each distinct row once from where the table keeps it and
  score; the gradients of each distinct row; the table's row-wise optimizer applies them in place
  (`DynamicEmbedding.apply_gradients`); the dense Adagrad step on the `torch.optim.Adagrad`
  state of `dense_weight` and `bias`.

So the fast path and the module + autograd + the same optimizers move the same weights the same
way.

>>> import torch
>>> from types import SimpleNamespace
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.embedding.optimizers import Adagrad
>>> from freshrec.embedding.table import DynamicEmbedding, TableConfig
>>> model = SimpleNamespace(table=DynamicEmbedding(TableConfig(dim=3, initializer="zeros",
...                                                            optimizer=Adagrad(lr=0.1))),
...                         dense_weight=torch.zeros(1, requires_grad=True),
...                         bias=torch.zeros(1, requires_grad=True))
>>> fm = FastFM(model, torch.optim.Adagrad([model.dense_weight, model.bias], lr=0.1))
>>> batch = Batch(SparseFeatures(["user", "item"], torch.tensor([11, 12, 21, 21]),
...                              torch.ones(4, dtype=torch.int32)),
...               dense=torch.ones(2, 1), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.tensor([0.0, 1.0], dtype=torch.float64), dense_keys=("x",))
>>> fm.learn(batch).tolist()                      # scored before learning
[0.5, 0.5]
>>> [round(p, 3) for p in fm.predict(batch).tolist()], model.table.live   # w_11 +0.1, w_12 -0.1
([0.525, 0.475], 3)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numba
import numpy as np
import torch

from freshrec._words import AHEAD, prefetch
from freshrec.batch import Batch
from freshrec.embedding.storage import locate, prefetch_row, row_view
from freshrec.embedding.table import DynamicEmbedding

__all__ = ["FMWeights", "FastFM", "Resolved", "plain_adagrad"]


class FMWeights(Protocol):
    """What `FastFM` needs of a model (`OnlineFM` has it)."""

    table: DynamicEmbedding
    dense_weight: torch.Tensor
    bias: torch.Tensor


@numba.njit(nogil=True, cache=True)
def _distinct(slots, where, unique, occurrence):
    """Number the distinct slots of `slots` in order of first occurrence: `unique[u]` is the
    slot of u, `occurrence[at]` the u of `slots[at]` (-1 for slot -1). `where` (slot -> u) must
    be all -1 and is left so. Returns the number of distinct slots."""
    n = 0
    for at in range(len(slots)):
        if at + AHEAD < len(slots) and slots[at + AHEAD] >= 0:
            prefetch(where.ctypes.data + 4 * slots[at + AHEAD])
        slot = slots[at]
        occurrence[at] = -1
        if slot < 0:
            continue
        u = where[slot]
        if u < 0:
            u, where[slot], unique[n] = n, n, slot
            n += 1
        occurrence[at] = u
    for i in range(n):
        where[unique[i]] = -1
    return n


@numba.njit(nogil=True, cache=True)
def _copy_rows(bases, chunk_rows, unique, local):
    """local[u] = the row of slot unique[u], read where the storage keeps it."""
    width, n = local.shape[1], len(unique)
    for u in range(n):
        if u + AHEAD < n:
            c, r = locate(chunk_rows, unique[u + AHEAD])
            prefetch_row(bases, c, r, width)
        c, r = locate(chunk_rows, unique[u])
        local[u, :] = row_view(bases, c, r, width)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _score(local, occurrence, lengths, dense, dense_w, bias, sums, logits):
    """logits[b] of each row b from the distinct rows `local` (see `_distinct`); `sums[b]` gets
    S = sum_i v_i, the factors of its ids. `occurrence` and `lengths` [keys * rows] are key-major
    (every row of key 0, then key 1, ...)."""
    rows, k = sums.shape
    linear, squares = np.zeros(rows, np.float32), np.zeros((rows, k), np.float32)
    sums[:] = 0.0
    at = 0
    for bag in range(len(lengths)):
        b = bag % rows
        for _ in range(lengths[bag]):
            u = occurrence[at]
            at += 1
            if u < 0:
                continue
            linear[b] += local[u, 0]
            for d in range(k):
                v = local[u, d + 1]
                sums[b, d] += v
                squares[b, d] += v * v  # per (row, factor): no chain of dependent adds
    for b in range(rows):
        pair = np.float32(0.0)
        for d in range(k):
            pair += sums[b, d] * sums[b, d] - squares[b, d]
        x = np.float32(0.0)
        for j in range(len(dense_w)):
            x += dense[b, j] * dense_w[j]
        logits[b] = bias[0] + x + linear[b] + np.float32(0.5) * pair


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _gradients(logits, labels, targets, levels, offsets, occurrence, lengths, sums, local, n, probs, grads,
               offset_grads, summed):
    """Probabilities; dL/dlogit per row: (p - y) / (labelled rows), plus for each ordinal level l
    (sigmoid(logit - offset_l) - [target >= l]) / (rows with a target) (`training_loss`); dL/d
    offset_l; the gradient of each of the `n` distinct rows summed over its occurrences in batch
    order (the order in which the table's coalescer would sum them). Returns False if a gradient
    or a logit is not finite."""
    rows, k = sums.shape
    labelled = graded = 0
    for b in range(rows):
        probs[b] = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits[b]))
        labelled += not np.isnan(labels[b])
        graded += len(levels) > 0 and not np.isnan(targets[b])
    offset_grads[:] = 0.0
    finite = True
    for b in range(rows):
        grads[b] = 0.0 if np.isnan(labels[b]) else (probs[b] - labels[b]) / np.float32(labelled)
        if len(levels) and not np.isnan(targets[b]):
            for level in range(len(levels)):
                above = np.float32(1.0) if targets[b] >= levels[level] else np.float32(0.0)
                p = np.float32(1.0) / (np.float32(1.0) + np.exp(offsets[level] - logits[b]))
                g = (p - above) / np.float32(graded)
                grads[b] += g
                offset_grads[level] -= g
        finite = finite and np.isfinite(grads[b]) and np.isfinite(logits[b])
    summed[:n] = 0.0
    at = 0
    for bag in range(len(lengths)):
        b = bag % rows
        g = grads[b]
        for _ in range(lengths[bag]):
            u = occurrence[at]
            at += 1
            if u < 0:
                continue
            summed[u, 0] += g
            for d in range(k):
                summed[u, d + 1] += g * (sums[b, d] - local[u, d + 1])
    return finite


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adagrad(weight, grad, weight_sum, step, lr, eps):
    """torch.optim.Adagrad's step on one parameter (flattened) and its step counter."""
    for j in range(len(weight)):
        weight_sum[j] += grad[j] * grad[j]
        weight[j] -= lr * grad[j] / (np.sqrt(weight_sum[j]) + eps)
    step[0] += 1


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _dense_adagrad(dense, grads, weight, bias, weight_sum, bias_sum, steps, lr, eps):
    """torch.optim.Adagrad's step on the dense weights (dL/dw = sum_b g_b x_b) and the bias;
    `steps` holds the two parameters' step counters."""
    weight_grad = np.zeros(len(weight), np.float32)
    for j in range(len(weight)):
        for b in range(len(grads)):
            weight_grad[j] += grads[b] * dense[b, j]
    bias_grad = np.zeros(1, np.float32)
    for b in range(len(grads)):
        bias_grad[0] += grads[b]
    _adagrad(weight, weight_grad, weight_sum, steps[0], lr, eps)
    _adagrad(bias, bias_grad, bias_sum, steps[1], lr, eps)


class Resolved(NamedTuple):
    """A batch with its ids resolved to table slots and numbered by distinct slot (`_distinct`):
    everything about it that does not depend on the rows' values."""

    batch: Batch
    lengths: np.ndarray
    unique: np.ndarray
    occurrence: np.ndarray


class _Resolver:
    """Resolves batches for one thread (owns the `where` buffer, kept all -1)."""

    def __init__(self, model: FMWeights) -> None:
        self.model = model
        self.where = np.zeros(0, np.int32)

    def __call__(self, batch: Batch, train: bool) -> Resolved:
        table = self.model.table
        ids, lengths = _ids(self.model, batch)
        now = float(batch.ts.max()) if len(batch) else 0.0
        slots = table.slots(ids, 0.0 if math.isnan(now) else now, train=train)
        high = table.storage.high
        if high > len(self.where):
            self.where = np.full(max(high, len(self.where) * 3 // 2), -1, np.int32)
        unique, occurrence = np.empty(len(slots), np.int64), np.empty(len(slots), np.int32)
        n = _distinct(slots, self.where, unique, occurrence)
        return Resolved(batch, lengths, unique[:n], occurrence)


class _DenseViews(NamedTuple):
    """numpy views of the dense weights (the ordinal offsets and their levels too, empty without
    them) and of their Adagrad state, valid while the model and the optimizer keep these tensors
    (`tensors`; `load_state_dict` replaces the optimizer's)."""

    tensors: tuple[torch.Tensor, ...]
    weight: np.ndarray
    bias: np.ndarray
    sums: tuple[np.ndarray, np.ndarray]
    steps: tuple[np.ndarray, np.ndarray]
    offsets: np.ndarray
    levels: np.ndarray
    offset_sum: np.ndarray
    offset_step: np.ndarray


class FastFM:
    """Fused `predict`/`learn` for an FM's weights (`model`: `OnlineFM` or anything with
    `table`, `dense_weight`, `bias`, and optionally `sparse_specs`, the features it reads, and
    `ordinal_offsets` with `config.ordinal_levels`); `optimizer` is the `torch.optim.Adagrad` of
    `dense_weight`, `bias` (and `ordinal_offsets`), whose state this path reads and writes as
    `optimizer.step()` would."""

    def __init__(self, model: FMWeights, optimizer: torch.optim.Adagrad) -> None:
        if not plain_adagrad(optimizer):
            raise ValueError("the fused FM step supports Adagrad without lr_decay, weight_decay or maximize")
        self.model = model
        self.optimizer = optimizer
        self.skipped = 0
        self._resolve = _Resolver(model)
        self._local = np.empty((0, 0), np.float32)
        self._summed = np.empty((0, 0), np.float32)
        self._views: _DenseViews | None = None

    def predict(self, batch: Batch) -> torch.Tensor:
        """Click probabilities [B] (float32); looks ids up without admitting or counting them."""
        logits, _, _ = self._score(self._resolve(batch, train=False))
        return torch.sigmoid(torch.from_numpy(logits))

    def learn(self, batch: Batch) -> torch.Tensor:
        """Score the batch, then take one step on it; returns the scores made before the step.

        A batch whose gradients are not finite changes no weight (new ids keep their rows) and
        adds one to `skipped`."""
        return self.learn_resolved(self._resolve(batch, train=True))

    def resolver(self) -> Callable[[Batch], Resolved]:
        """A function that resolves batches for learning (admitting new ids), for one other thread:
        `learn_resolved(resolver()(batch))` is `learn(batch)`. Batches must be resolved in the order
        they are learned, and while resolved batches wait nothing else may insert into, evict from or
        take a delta of the table (its newest rows may be ahead of the batch just learned):
        `OnlineTrainer.learn_stream` does this with `freshrec.train.lookahead`."""
        resolve = _Resolver(self.model)
        return lambda batch: resolve(batch, train=True)

    def learn_resolved(self, resolved: Resolved) -> torch.Tensor:
        """`learn` of a batch resolved by this model's table (the rows are read now)."""
        logits, sums, local = self._score(resolved)
        batch, n, views = resolved.batch, len(resolved.unique), self._dense_views()
        labels = np.ascontiguousarray(batch.labels.numpy(), np.float32)
        targets = labels if batch.targets is None else np.ascontiguousarray(batch.targets.numpy(), np.float32)
        levels = views.levels if batch.targets is not None else views.levels[:0]
        probs, grads = np.empty_like(logits), np.empty_like(logits)
        offset_grads = np.empty(len(levels), np.float32)
        summed = self._summed = _fit(self._summed, n, local.shape[1])
        if not _gradients(logits, labels, targets, levels, views.offsets, resolved.occurrence, resolved.lengths,
                          sums, local, n, probs, grads, offset_grads, summed):
            self.skipped += 1
            return torch.from_numpy(probs)
        graded = len(levels) > 0 and not np.isnan(targets).all()
        if np.isnan(labels).all() and not graded:
            return torch.from_numpy(probs)
        self.model.table.apply_gradients(resolved.unique, torch.from_numpy(summed[:n]), unique=True)
        group = self.optimizer.param_groups[0]
        lr, eps = np.float32(group["lr"]), np.float32(group["eps"])
        _dense_adagrad(_dense(batch), grads, views.weight, views.bias, *views.sums, views.steps, lr, eps)
        if graded:
            _adagrad(views.offsets, offset_grads, views.offset_sum, views.offset_step, lr, eps)
        return torch.from_numpy(probs)

    def _score(self, resolved: Resolved) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, S per row, the distinct rows as read) of a resolved batch."""
        table, rows = self.model.table, len(resolved.batch)
        width = table.config.dim
        n = len(resolved.unique)
        local = self._local = _fit(self._local, n, width)
        addresses = table.storage.addresses()
        if addresses is not None:  # host float32: read the rows where they lie
            _copy_rows(addresses["rows"], table.storage.chunk_rows, resolved.unique, local)
        else:
            local[:n] = table.gather(resolved.unique).cpu().numpy()
        views = self._dense_views()
        sums, logits = np.empty((rows, width - 1), np.float32), np.empty(rows, np.float32)
        _score(local, resolved.occurrence, resolved.lengths, _dense(resolved.batch), views.weight, views.bias,
               sums, logits)
        return logits, sums, local

    def _dense_views(self) -> _DenseViews:
        weight, bias, state = self.model.dense_weight, self.model.bias, self.optimizer.state
        offsets = getattr(self.model, "ordinal_offsets", None)
        params = (weight, bias) if offsets is None else (weight, bias, offsets)
        tensors = params + tuple(state[p][name] for p in params for name in ("sum", "step"))
        views = self._views
        if views is None or len(views.tensors) != len(tensors) or any(map(operator.is_not, views.tensors, tensors)):
            flat = [t.detach().reshape(-1).numpy() for t in tensors]
            empty = np.zeros(0, np.float32)
            levels = np.array(self.model.config.ordinal_levels, np.float32) if offsets is not None else empty
            views = self._views = _DenseViews(
                tensors, flat[0], flat[1], (flat[len(params)], flat[len(params) + 2]),
                (flat[len(params) + 1], flat[len(params) + 3]),
                flat[2] if offsets is not None else empty, levels,
                flat[len(params) + 4] if offsets is not None else empty,
                flat[len(params) + 5] if offsets is not None else np.zeros(1, np.float32))
        return views


def plain_adagrad(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether `optimizer` steps as the fused dense step does: `torch.optim.Adagrad` without
    lr_decay, weight_decay or maximize."""
    if not isinstance(optimizer, torch.optim.Adagrad):
        return False
    group = optimizer.param_groups[0]
    return not (group["lr_decay"] or group["weight_decay"] or group.get("maximize"))


def _fit(buffer: np.ndarray, rows: int, width: int) -> np.ndarray:
    """`buffer` if it holds `rows` rows of `width`, else a larger one (grown by half)."""
    if rows <= len(buffer) and buffer.shape[1] == width:
        return buffer
    return np.empty((max(rows, len(buffer) * 3 // 2), width), np.float32)


def _ids(model: FMWeights, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths) key-major over the model's sparse features (`sparse_specs` when it has
    them, else every key of the batch)."""
    sparse = batch.sparse
    specs = getattr(model, "sparse_specs", None)
    keys = sparse.keys() if specs is None else [s.name for s in specs]
    if keys == sparse.keys():
        return sparse.values().numpy(), sparse.lengths().numpy()
    parts = [sparse[key] for key in keys]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return (torch.cat([p.values for p in parts]).numpy(),
            torch.cat([p.lengths for p in parts]).numpy())


def _dense(batch: Batch) -> np.ndarray:
    return np.ascontiguousarray(batch.dense.numpy(), np.float32)
