"""`FastFM`: the factorization machine's predict-then-learn step fused into numba kernels.

The same model as `freshrec.models.OnlineFM`, on its own weights: one shared table (`model.table`,
width k + 1: column 0 the linear weight w, columns 1..k the factors v), `model.dense_weight` [D]
and `model.bias`. For each row of a batch,

    logit = bias + dense_weight . x + sum_i w_i + 0.5 * sum_d [(sum_i v_id)^2 - sum_i v_id^2]

over every id occurrence i of every sparse feature (slot -1, an id without a row, adds nothing).
`learn(batch)` scores the batch with the weights as they were before it (the prequential
prediction, returned), then takes one step on the mean BCE over its labelled rows: per
occurrence dL/dw_i = g and dL/dv_i = g * (S - v_i), with S = sum_i v_i of its row and
g = (p - y) / n. One kernel copies each distinct row once from where the table keeps it (no
sort: first-occurrence order) and scores; a second sums the gradients of each distinct row; the
table's row-wise optimizer applies them in place (`DynamicEmbedding.apply_gradients`); a third
kernel takes the
dense Adagrad step on the `torch.optim.Adagrad` state of `dense_weight` and `bias`, so the fast
path and the module + autograd + the same optimizers move the same weights the same way.

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
from typing import NamedTuple, Protocol

import numba
import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.embedding.storage import AHEAD, locate, prefetch_row, row_view
from freshrec.embedding.table import DynamicEmbedding

__all__ = ["FMWeights", "FastFM"]


class FMWeights(Protocol):
    """What `FastFM` needs of a model (`OnlineFM` has it)."""

    table: DynamicEmbedding
    dense_weight: torch.Tensor
    bias: torch.Tensor


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _score(bases, chunk_rows, slots, lengths, dense, dense_w, bias, where, unique, local, occurrence,
           sums, logits):
    """logits[b] of each row b; `sums[b]` gets S = sum_i v_i (the factors of its ids).

    `slots` is key-major (every row of key 0, then key 1, ...), `lengths` [keys * rows]. Each
    distinct row is read from the storage once, into `local[u]` (u in order of first occurrence,
    its slot in `unique[u]`, each occurrence's u in `occurrence`, -1 without a row); `where`
    (slot -> u) must be all -1 and is left so. Returns the number of distinct rows."""
    rows, k = sums.shape
    width = k + 1
    linear, squares = np.zeros(rows, np.float32), np.zeros((rows, k), np.float32)
    sums[:] = 0.0
    n = at = 0
    for bag in range(len(lengths)):
        b = bag % rows
        for _ in range(lengths[bag]):
            if at + AHEAD < len(slots) and slots[at + AHEAD] >= 0:
                c, r = locate(chunk_rows, slots[at + AHEAD])
                prefetch_row(bases, c, r, width)
            slot = slots[at]
            occurrence[at] = -1
            at += 1
            if slot < 0:
                continue
            u = where[slot]
            if u < 0:
                u, where[slot], unique[n] = n, n, slot
                n += 1
                c, r = locate(chunk_rows, slot)
                local[u, :] = row_view(bases, c, r, width)
            occurrence[at - 1] = u
            linear[b] += local[u, 0]
            for d in range(k):
                v = local[u, d + 1]
                sums[b, d] += v
                squares[b, d] += v * v  # per (row, factor): no chain of dependent adds
    for i in range(n):
        where[unique[i]] = -1
    for b in range(rows):
        pair = np.float32(0.0)
        for d in range(k):
            pair += sums[b, d] * sums[b, d] - squares[b, d]
        x = np.float32(0.0)
        for j in range(len(dense_w)):
            x += dense[b, j] * dense_w[j]
        logits[b] = bias + x + linear[b] + np.float32(0.5) * pair
    return n


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _row_gradients(logits, labels, probs, grads):
    """Probabilities, and g = (p - y) / n per row (0 for unlabelled rows); False if not finite."""
    labelled = 0
    for b in range(len(labels)):
        probs[b] = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits[b]))
        if not np.isnan(labels[b]):
            labelled += 1
    finite = True
    for b in range(len(labels)):
        grads[b] = 0.0 if np.isnan(labels[b]) else (probs[b] - labels[b]) / np.float32(labelled)
        finite = finite and np.isfinite(grads[b]) and np.isfinite(logits[b])
    return finite


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _sparse_gradients(occurrence, lengths, grads, sums, local, n, summed):
    """The gradient of each of the `n` distinct rows `_score` found, summed over its
    occurrences in batch order (the order in which the table's coalescer would sum them)."""
    rows, k = sums.shape
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


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _dense_adagrad(dense, grads, weight, bias, weight_sum, bias_sum, lr, eps):
    """torch.optim.Adagrad's step on the dense weights (dL/dw = sum_b g_b x_b) and the bias."""
    for j in range(len(weight)):
        g = np.float32(0.0)
        for b in range(len(grads)):
            g += grads[b] * dense[b, j]
        weight_sum[j] += g * g
        weight[j] -= lr * g / (np.sqrt(weight_sum[j]) + eps)
    g = np.float32(0.0)
    for b in range(len(grads)):
        g += grads[b]
    bias_sum[0] += g * g
    bias[0] -= lr * g / (np.sqrt(bias_sum[0]) + eps)


class _Scratch:
    """Buffers kept between batches (grown, never shrunk; `where` stays all -1)."""

    def __init__(self) -> None:
        self.where = np.zeros(0, np.int32)
        self.unique = np.zeros(0, np.int64)
        self.occurrence = np.zeros(0, np.int32)
        self.local = np.zeros((0, 0), np.float32)
        self.summed = np.zeros((0, 0), np.float32)

    def fit(self, ids: int, bound: int, width: int) -> _Scratch:
        if bound > len(self.where):
            self.where = np.full(max(bound, len(self.where) * 3 // 2), -1, np.int32)
        if ids > len(self.unique) or self.local.shape[1] != width:
            size = max(ids, len(self.unique) * 3 // 2)
            self.unique, self.occurrence = np.empty(size, np.int64), np.empty(size, np.int32)
            self.local, self.summed = np.empty((size, width), np.float32), np.empty((size, width), np.float32)
        return self


class _Rows(NamedTuple):
    """Where the kernels read the rows of `slots`: chunk addresses, rows per chunk, the slots to
    read there and a bound on them (`copy` keeps a gathered copy alive)."""

    bases: np.ndarray
    chunk_rows: int
    slots: np.ndarray
    bound: int
    copy: np.ndarray | None = None


def _rows_in_place(table: DynamicEmbedding, slots: np.ndarray) -> _Rows:
    """The table's own storage when it is host float32 (zero copy), else a gathered copy read as
    one chunk (its slots are then positions in `slots`)."""
    storage = table.storage  # the fused path reads rows where they lie
    addresses = storage.addresses()
    if addresses is not None:
        return _Rows(addresses["rows"], storage.chunk_rows, slots, storage.high)
    copy = np.ascontiguousarray(table.gather(slots).numpy())
    local = np.where(slots >= 0, np.arange(len(slots)), -1)
    return _Rows(np.array([copy.ctypes.data], np.int64), max(len(slots), 1), local, len(slots), copy)


class FastFM:
    """Fused `predict`/`learn` for an FM's weights (`model`: `OnlineFM` or anything with
    `table`, `dense_weight`, `bias`, and optionally `sparse_specs`, the features it reads);
    `optimizer` is the `torch.optim.Adagrad` of `dense_weight` and `bias`, whose state this path
    reads and writes as `optimizer.step()` would."""

    def __init__(self, model: FMWeights, optimizer: torch.optim.Adagrad) -> None:
        self.model = model
        self.optimizer = optimizer
        self.skipped = 0
        self._scratch = _Scratch()

    def predict(self, batch: Batch) -> torch.Tensor:
        """Click probabilities [B] (float32); looks ids up without admitting or counting them."""
        logits, _, _, _, _ = self._score(batch, train=False)
        return torch.sigmoid(torch.from_numpy(logits))

    def learn(self, batch: Batch) -> torch.Tensor:
        """Score the batch, then take one step on it; returns the scores made before the step.

        A batch whose gradients are not finite changes no weight (new ids keep their rows) and
        adds one to `skipped`."""
        logits, sums, rows, lengths, n = self._score(batch, train=True)
        labels = np.ascontiguousarray(batch.labels.numpy(), np.float32)
        probs, grads = np.empty_like(logits), np.empty_like(logits)
        if not _row_gradients(logits, labels, probs, grads):
            self.skipped += 1
        elif not np.isnan(labels).all():
            scratch = self._scratch
            _sparse_gradients(scratch.occurrence, lengths, grads, sums, scratch.local, n, scratch.summed)
            unique = scratch.unique[:n] if rows.copy is None else rows.slots[scratch.unique[:n]]
            self.model.table.apply_gradients(unique, torch.from_numpy(scratch.summed[:n]), unique=rows.copy is None)
            self._learn_dense(batch, grads)
        return torch.from_numpy(probs)

    def _score(self, batch: Batch, train: bool):
        """(logits, S per row, the rows read, lengths, distinct rows) of one batch."""
        table, k = self.model.table, self.model.table.config.dim - 1
        ids, lengths = self._ids(batch)
        now = float(batch.ts.max()) if len(batch) else 0.0
        slots = table.slots(ids, 0.0 if math.isnan(now) else now, train=train)
        rows = _rows_in_place(table, slots)
        scratch = self._scratch.fit(len(ids), rows.bound, k + 1)
        sums, logits = np.empty((len(batch), k), np.float32), np.empty(len(batch), np.float32)
        n = _score(rows.bases, rows.chunk_rows, rows.slots, lengths, _dense(batch),
                   self.model.dense_weight.detach().reshape(-1).numpy(),
                   np.float32(self.model.bias.detach().reshape(-1)[0]), scratch.where, scratch.unique,
                   scratch.local, scratch.occurrence, sums, logits)
        if rows.copy is not None:  # positions, not slots: map back (the table coalesces repeats)
            rows = rows._replace(slots=slots)
        return logits, sums, rows, lengths, n

    def _ids(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths) key-major over the model's sparse features (`sparse_specs` when it has
        them, else every key of the batch)."""
        sparse = batch.sparse
        specs = getattr(self.model, "sparse_specs", None)
        keys = sparse.keys() if specs is None else [s.name for s in specs]
        if keys == sparse.keys():
            return sparse.values().numpy(), sparse.lengths().numpy()
        parts = [sparse[key] for key in keys]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return (torch.cat([p.values for p in parts]).numpy(),
                torch.cat([p.lengths for p in parts]).numpy())

    def _learn_dense(self, batch: Batch, grads: np.ndarray) -> None:
        weight, bias = self.model.dense_weight, self.model.bias
        group, state = self.optimizer.param_groups[0], self.optimizer.state
        if group["lr_decay"] or group["weight_decay"] or group.get("maximize"):
            raise ValueError("the fused FM step supports Adagrad without lr_decay, weight_decay or maximize")
        for p in (weight, bias):
            state[p]["step"] += 1
        _dense_adagrad(_dense(batch), grads, weight.detach().reshape(-1).numpy(),
                       bias.detach().reshape(-1).numpy(), state[weight]["sum"].reshape(-1).numpy(),
                       state[bias]["sum"].reshape(-1).numpy(), np.float32(group["lr"]),
                       np.float32(group["eps"]))


def _dense(batch: Batch) -> np.ndarray:
    return np.ascontiguousarray(batch.dense.numpy(), np.float32)
