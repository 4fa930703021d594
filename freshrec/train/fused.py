"""`FusedStep`: predict-then-learn of a factorization machine or a logistic regression over a
whole chunk of the stream in one numba call, micro-batch by micro-batch (down to one event each).

The model's weights (`OnlineFM`: a table of width k + 1; `LogisticRegression`: a table of width
1), each row holding column 0 the linear weight w and columns 1..k the factors v (k = 0 for LR),
`dense.weight` [1, D] and `bias`. For each row of a micro-batch

    logit = bias + dense_weight . x + sum_i w_i + 0.5 * sum_d [(sum_i v_id)^2 - sum_i v_id^2]

over every id occurrence i of every sparse feature (slot -1, an id without a row, adds nothing).
Each micro-batch is scored with the weights as they were before it (the prequential prediction),
then takes one step on the mean BCE over its labelled rows: per occurrence dL/dw_i = g and
dL/dv_i = g * (S - v_i), with S = sum_i v_i of its row and g = (p - y) / n. A model with
`ordinal_levels` (and a batch with `targets`) adds to g, per row with a target, sum_l
(sigmoid(logit - offset_l) - [target >= l]) / (rows with a target), and steps the offsets
(`freshrec.models.base.training_loss`). The rows take their table's row-wise optimizer (its numba
kernel, through `freshrec.embedding.optimizers.row_step`), the dense weights torch's Adagrad step
on the `torch.optim.Adagrad` state: the module + autograd + the same optimizers move the same
weights the same way. A micro-batch whose gradients are not finite changes nothing.

The work is split by what it depends on:

- resolving (`resolve`): the ids' table slots, admitting new ids, for the whole chunk at once
  (admission counts a chunk's ids together; a new row is created at the chunk's start) - nothing
  that depends on the rows' values, so `OnlineTrainer.learn_stream` resolves the next chunk in a
  worker thread while this one learns;
- learning (`learn_resolved`): one call of `_learn_chunk`, which releases the GIL and loops over
  the micro-batches: distinct rows (in order of first occurrence, through a small local hash),
  score, gradients, row-wise step, dense step, while the rows of the next few events are
  prefetched; each row stepped is marked changed at that step's version (for deltas:
  `DynamicEmbedding.in_place_steps`), and it returns each micro-batch's outcome.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import OnlineFM
>>> from freshrec.models.fm import FMConfig
>>> model = OnlineFM([FeatureSpec("user", FieldKind.CATEGORICAL, dim=2)], FMConfig(dim=2, lr=0.1, init_std=0.0))
>>> step = FusedStep(model, torch.optim.Adagrad(list(model.parameters()), lr=0.1))
>>> batch = Batch(SparseFeatures(["user"], torch.tensor([11, 11, 12]), torch.ones(3, dtype=torch.int32)),
...               dense=torch.zeros(3, 0), labels=torch.tensor([1.0, 1.0, 0.0]),
...               ts=torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
>>> probabilities, outcome = step.learn(batch, sizes=[1, 1, 1])   # three micro-batches of one event each
>>> [round(p, 3) for p in probabilities.tolist()], outcome.tolist(), model.table.version
([0.5, 0.546, 0.542], [0, 0, 0], 3)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
import torch

from freshrec._words import prefetch
from freshrec.batch import Batch
from freshrec.embedding.optimizers import row_step
from freshrec.embedding.seqlock import read_row
from freshrec.embedding.storage import ROWS, SEQ, locate, prefetch_row, row_view
from freshrec.models.base import OnlineModel
from freshrec.models.fm import OnlineFM
from freshrec.models.lr import LogisticRegression

__all__ = ["LEARNED", "NO_LABELS", "NOT_FINITE", "FusedStep", "ResolvedChunk", "fused_logits", "fused_model",
           "fused_slots", "plain_adagrad"]

LEARNED, NOT_FINITE, NO_LABELS = 0, 1, 2   # a micro-batch's outcome: stepped; skipped (changed nothing); scored only
PREFETCH_ROWS = 4   # the rows past a micro-batch whose table rows are prefetched while it learns


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@numba.njit(nogil=True, cache=True, inline="always")
def _prefetch_rows(first, last, rows, starts, slots, table, width):
    """Prefetch the row, first state row and `dirty` entry of every id of rows first..last-1."""
    chunk_rows, row_bases, state_bases, seq_bases, dirty = table
    for key in range(len(starts) // rows):
        for r in range(first, last):
            bag = key * rows + r
            for j in range(starts[bag], starts[bag + 1]):
                if slots[j] >= 0:
                    c, at = locate(chunk_rows, slots[j])
                    prefetch_row(row_bases, c, at, width)
                    if len(state_bases):
                        prefetch_row(state_bases[0], c, at, width)
                    prefetch(dirty.ctypes.data + 8 * slots[j])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _learn_chunk(sizes, slots, lengths, dense, labels, targets, levels,  # noqa: PLR0913
                 table, kind, hyper, per_event, version, dense_state, lr, eps, most, width, probs, outcome):
    """Score then learn each micro-batch of `sizes` rows of a chunk, in order; returns the steps taken.

    `slots` and `lengths` [keys * rows] are key-major; `table` = (chunk_rows, row addresses
    [chunks], state addresses [S, chunks], counter addresses (`seqlock`: empty unless shared)) of
    host float32 storage of rows of `width`, and its `dirty` array; `kind` and `hyper` its
    row-wise optimizer (`row_step`; `per_event`: it takes a micro-batch's gradients times the
    events they average), `version` its version.
    `dense_state` = (dense weight, bias, their Adagrad sums, their step counters, ordinal offsets,
    their sum, their step counter). `most`: the most id occurrences of one micro-batch. Writes
    `probs` [rows] and `outcome` per micro-batch (LEARNED, NOT_FINITE or NO_LABELS); each row
    stepped gets dirty[slot] = the table's version after the step."""
    chunk_rows, row_bases, state_bases, seq_bases, dirty = table
    weight, bias, weight_sum, bias_sum, weight_step, bias_step, offsets, offset_sum, offset_step = dense_state
    rows, k = len(labels), width - 1
    keys = len(lengths) // rows
    starts = np.empty(len(lengths) + 1, np.int64)
    starts[0] = 0
    for bag in range(len(lengths)):
        starts[bag + 1] = starts[bag] + lengths[bag]
    size = 16   # the distinct rows of a micro-batch: open addressing on the slot, at most half full
    while size < 2 * most:
        size *= 2
    mask = np.uint64(size - 1)
    hash_slot, hash_u = np.empty(size, np.int64), np.full(size, -1, np.int32)
    unique, unique_at = np.empty(most, np.int64), np.empty(most, np.int64)
    occurrence, local, summed = np.empty(most, np.int32), np.empty((most, width), np.float32), \
        np.empty((most, width), np.float32)
    batch_rows = sizes.max() if len(sizes) else 0
    logits, grads = np.empty(batch_rows, np.float32), np.empty(batch_rows, np.float32)
    linear, sums, squares = np.empty(batch_rows, np.float32), np.empty((batch_rows, k), np.float32), \
        np.empty((batch_rows, k), np.float32)
    weight_grad, one, offset_grads = np.empty(len(weight), np.float32), np.empty(1, np.float32), \
        np.empty(len(levels), np.float32)
    stepped, first, fetched = 0, 0, 0
    for part in range(len(sizes)):
        last = first + sizes[part]
        if fetched < min(last + PREFETCH_ROWS, rows):   # the next few rows, each once
            _prefetch_rows(max(fetched, last), min(last + PREFETCH_ROWS, rows), rows, starts, slots, table, width)
            fetched = min(last + PREFETCH_ROWS, rows)
        # the distinct rows of the micro-batch, in order of first occurrence, each copied to `local`
        # when first seen (its optimizer state and `dirty` entry prefetched for the step): the core
        # overlaps these loads with the hashing, where a second pass over the distinct rows cost a
        # third more at micro-batches of 16 (2026-12-06)
        n, at = 0, 0
        for key in range(keys):
            for r in range(first, last):
                bag = key * rows + r
                for j in range(starts[bag], starts[bag + 1]):
                    slot, u = slots[j], -1
                    if slot >= 0:
                        h = (np.uint64(slot) * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(24)) & mask
                        while hash_u[h] >= 0 and hash_slot[h] != slot:
                            h = (h + np.uint64(1)) & mask
                        u = hash_u[h]
                        if u < 0:
                            u, hash_u[h], hash_slot[h] = n, n, slot
                            unique[n], unique_at[n] = slot, h
                            c, at_row = locate(chunk_rows, slot)
                            local[n, :] = row_view(row_bases, c, at_row, width)
                            if len(state_bases):
                                prefetch_row(state_bases[0], c, at_row, width)
                            prefetch(dirty.ctypes.data + 8 * slot)
                            n += 1
                    occurrence[at] = u
                    at += 1
        for u in range(n):
            hash_u[unique_at[u]] = -1
        # score: logit = bias + w.x + sum of linear weights + 0.5 * sum_d (S_d^2 - sum of squares)
        b_rows = last - first
        linear[:b_rows] = 0.0
        sums[:b_rows] = 0.0
        squares[:b_rows] = 0.0
        at = 0
        for key in range(keys):
            for b in range(b_rows):
                bag = key * rows + first + b
                for _ in range(starts[bag], starts[bag + 1]):
                    u = occurrence[at]
                    at += 1
                    if u < 0:
                        continue
                    linear[b] += local[u, 0]
                    for d in range(k):
                        v = local[u, d + 1]
                        sums[b, d] += v
                        squares[b, d] += v * v   # per (row, factor): no chain of dependent adds
        labelled = graded = 0
        for b in range(b_rows):
            r = first + b
            pair = np.float32(0.0)
            for d in range(k):
                pair += sums[b, d] * sums[b, d] - squares[b, d]
            x = np.float32(0.0)
            for j in range(len(weight)):
                x += dense[r, j] * weight[j]
            logits[b] = bias[0] + x + linear[b] + np.float32(0.5) * pair
            probs[r] = _sigmoid(logits[b])
            labelled += not np.isnan(labels[r])
            graded += len(levels) > 0 and not np.isnan(targets[r])
        # dL/dlogit per row, dL/doffset per level, dL/dw of the dense weights
        finite = True
        offset_grads[:] = 0.0
        for b in range(b_rows):
            r = first + b
            grads[b] = 0.0 if np.isnan(labels[r]) else (probs[r] - labels[r]) / np.float32(labelled)
            if graded and not np.isnan(targets[r]):
                for level in range(len(levels)):
                    above = np.float32(1.0) if targets[r] >= levels[level] else np.float32(0.0)
                    g = (_sigmoid(logits[b] - offsets[level]) - above) / np.float32(graded)
                    grads[b] += g
                    offset_grads[level] -= g
            finite = finite and np.isfinite(grads[b]) and np.isfinite(logits[b])
        for j in range(len(weight)):
            weight_grad[j] = 0.0
            for b in range(b_rows):
                weight_grad[j] += grads[b] * dense[first + b, j]
            finite = finite and np.isfinite(weight_grad[j])
        if not finite:
            outcome[part] = NOT_FINITE
        elif labelled == 0 and graded == 0:
            outcome[part] = NO_LABELS
        else:
            outcome[part] = LEARNED
        if outcome[part] != LEARNED:
            first = last
            continue
        # each distinct row's gradient, summed over its occurrences in batch order (per event: times
        # the events the mean is over, for a `per_event` optimizer)
        summed[:n] = 0.0
        scale = np.float32(labelled if labelled else graded) if per_event else np.float32(1.0)
        at = 0
        for key in range(keys):
            for b in range(b_rows):
                bag, g = key * rows + first + b, grads[b] * scale
                for _ in range(starts[bag], starts[bag + 1]):
                    u = occurrence[at]
                    at += 1
                    if u < 0:
                        continue
                    summed[u, 0] += g
                    for d in range(k):
                        summed[u, d + 1] += g * (sums[b, d] - local[u, d + 1])
        stepped += 1
        if n:
            row_step(kind, chunk_rows, unique[:n], summed[:n], row_bases, state_bases, seq_bases, hyper)
        for u in range(n):
            dirty[unique[u]] = max(dirty[unique[u]], version + stepped)
        # dense Adagrad (torch.optim.Adagrad's step) on the weights, the bias and the offsets
        one[0] = 0.0
        for b in range(b_rows):
            one[0] += grads[b]
        _adagrad(weight, weight_grad, weight_sum, weight_step, lr, eps)
        _adagrad(bias, one, bias_sum, bias_step, lr, eps)
        if graded:
            _adagrad(offsets, offset_grads, offset_sum, offset_step, lr, eps)
        first = last
    return stepped


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adagrad(weight, grad, weight_sum, step, lr, eps):
    """torch.optim.Adagrad's step on one parameter (flattened) and its step counter."""
    for j in range(len(weight)):
        weight_sum[j] += grad[j] * grad[j]
        weight[j] -= lr * grad[j] / (np.sqrt(weight_sum[j]) + eps)
    step[0] += 1


class ResolvedChunk(NamedTuple):
    """A chunk with its ids resolved to table slots: everything about it that does not depend on
    the rows' values. `slots` and `lengths` are key-major over the model's keys grouped by table."""

    batch: Batch
    slots: np.ndarray
    lengths: np.ndarray


class _DenseViews(NamedTuple):
    """numpy views of the dense weights (the ordinal offsets and their levels too, empty without
    them) and of their Adagrad state, valid while the model and the optimizer keep these tensors
    (`tensors`; `load_state_dict` replaces the optimizer's)."""

    tensors: tuple[torch.Tensor, ...]
    state: tuple[np.ndarray, ...]   # as `_learn_chunk` takes `dense_state`
    levels: np.ndarray


class FusedStep:
    """The fused step over `model`'s weights (see the module docstring; `fused_model(model)`: whether
    a model qualifies); `optimizer` is the `torch.optim.Adagrad` of its dense parameters,
    whose state this path reads and writes as `optimizer.step()` would."""

    def __init__(self, model: OnlineModel, optimizer: torch.optim.Adagrad) -> None:
        if not plain_adagrad(optimizer):
            raise ValueError("the fused step supports Adagrad without lr_decay, weight_decay or maximize")
        if not fused_model(model):
            raise ValueError(f"the fused step does not learn {type(model).__name__} with these tables")
        self.model, self.optimizer = model, optimizer
        (self.table,) = model.tables.values()
        self.keys = [s.name for s in model.embeddings.specs]
        self.skipped = 0
        self._views: _DenseViews | None = None

    def resolve(self, batch: Batch) -> ResolvedChunk:
        """Resolve a chunk for learning (admitting new ids, as of its latest event time). Chunks
        must be resolved in the order they are learned; while a resolved chunk waits, nothing else
        may insert into, evict from or take a delta of the table (`OnlineTrainer.learn_stream`
        does this with `freshrec.train.lookahead`)."""
        now = float(batch.ts.max()) if len(batch) else 0.0
        values, lengths = _keyed_ids(batch, self.keys)
        slots = self.table.slots(values, 0.0 if math.isnan(now) else now, train=True)
        return ResolvedChunk(batch, slots, lengths)

    def learn(self, batch: Batch, sizes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`learn_resolved(resolve(batch), sizes)`."""
        return self.learn_resolved(self.resolve(batch), sizes)

    def learn_resolved(self, chunk: ResolvedChunk, sizes: Sequence[int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Learn a resolved chunk as micro-batches of `sizes` rows (None: one micro-batch), each
        scored before it is learned. Returns (probabilities [rows], outcome per micro-batch:
        LEARNED, NOT_FINITE - it changed nothing and adds one to `skipped` - or NO_LABELS)."""
        batch, rows = chunk.batch, len(chunk.batch)
        sizes = np.array(([rows] if rows else []) if sizes is None else sizes, np.int64)
        if sizes.sum() != rows or (sizes < 1).any():
            raise ValueError(f"micro-batches of {sizes.tolist()} rows for a chunk of {rows}")
        probs, outcome = np.empty(rows, np.float32), np.empty(len(sizes), np.int8)
        if not rows:
            return probs, outcome
        per_row = chunk.lengths.reshape(len(self.keys), rows).sum(0)
        most = int(np.add.reduceat(per_row, np.cumsum(sizes) - sizes).max())
        labels = np.ascontiguousarray(batch.labels.numpy(), np.float32)
        graded = batch.targets is not None
        targets = np.ascontiguousarray(batch.targets.numpy(), np.float32) if graded else labels
        views, group = self._dense_views(), self.optimizer.param_groups[0]
        table, optimizer = self.table, self.table.row_optimizer
        with table.in_place_steps() as place:
            addresses = table.storage.addresses()
            place.steps = _learn_chunk(
                sizes, chunk.slots, chunk.lengths, _dense(batch), labels, targets,
                views.levels if graded else views.levels[:0],
                (table.storage.chunk_rows, addresses[ROWS], optimizer.stacked_state(addresses), addresses[SEQ],
                 place.dirty),
                optimizer.kind, optimizer.hyper_array, optimizer.per_event, place.version, views.state,
                np.float32(group["lr"]),
                np.float32(group["eps"]), max(most, 1), table.config.dim, probs, outcome)
        self.skipped += int((outcome == NOT_FINITE).sum())
        return probs, outcome

    def _dense_views(self) -> _DenseViews:
        model, state = self.model, self.optimizer.state
        offsets = getattr(model, "ordinal_offsets", None)
        params = (model.dense.weight, model.bias) + (() if offsets is None else (offsets,))
        tensors = params + tuple(state[p][name] for p in params for name in ("sum", "step"))
        views = self._views
        if views is None or len(views.tensors) != len(tensors) or any(map(operator.is_not, views.tensors, tensors)):
            flat = [t.detach().reshape(-1).numpy() for t in tensors]
            p = len(params)   # flat: the parameters, then each one's (sum, step)
            if offsets is None:
                ordinal = (np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(1, np.float32))
                levels = np.zeros(0, np.float32)
            else:
                ordinal = (flat[2], flat[p + 4], flat[p + 5])
                levels = np.array(model.config.ordinal_levels, np.float32)
            views = self._views = _DenseViews(
                tensors, (flat[0], flat[1], flat[p], flat[p + 2], flat[p + 1], flat[p + 3], *ordinal), levels)
        return views


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _score_rows(slots, lengths, dense, chunk_rows, row_bases, seq_bases, width, weight, bias, out):
    """The logit of each row (see the module docstring), reading rows where they lie, each one whole
    (`read_row`: a row another process is writing is read before or after, a row past the chunks
    mapped or stuck mid-write as absent); no autograd."""
    rows, k = len(out), width - 1
    keys = len(lengths) // rows if rows else 0
    starts = np.empty(len(lengths) + 1, np.int64)
    starts[0] = 0
    for bag in range(len(lengths)):
        starts[bag + 1] = starts[bag] + lengths[bag]
    sums, v = np.empty(k, np.float32), np.empty(width, np.float32)
    limit = len(row_bases) * chunk_rows
    for r in range(rows):
        logit = bias
        for j in range(len(weight)):
            logit += weight[j] * dense[r, j]
        sums[:] = 0.0
        squares = np.float32(0.0)
        for key in range(keys):
            bag = key * rows + r
            for i in range(starts[bag], starts[bag + 1]):
                slot = slots[i]
                if slot < 0:
                    continue
                if slot >= limit:
                    continue
                c, at = locate(chunk_rows, slot)
                if not read_row(row_bases, seq_bases, c, at, width, v):
                    continue
                logit += v[0]
                for d in range(k):
                    x = v[d + 1]
                    sums[d] += x
                    squares += x * x
        pairs = np.float32(0.0)
        for d in range(k):
            pairs += sums[d] * sums[d]
        out[r] = logit + np.float32(0.5) * (pairs - squares)


def fused_slots(model: OnlineModel, batch: Batch) -> np.ndarray:
    """The rows (slots; -1: none learned) of the batch's ids in a `fused_model`'s table, key-major in
    the model's key order (`fused_logits` takes them: one index lookup per id for both)."""
    (table,) = model.tables.values()
    values, _ = _keyed_ids(batch, [s.name for s in model.embeddings.specs])
    return table.slots(values, 0.0, train=False)


def fused_logits(model: OnlineModel, batch: Batch, slots: np.ndarray | None = None) -> np.ndarray:
    """The logits `model(batch, train=False)` gives (float32, within rounding), in one numba pass
    over host rows: no id admitted, no autograd, no row copied; for a `fused_model` (a server's
    scoring path). `slots`: `fused_slots(model, batch)`, when the caller has them.

    >>> import torch
    >>> from freshrec.batch import SparseFeatures
    >>> from freshrec.events.event import FieldKind
    >>> from freshrec.features import FeatureSpec
    >>> model = OnlineFM([FeatureSpec("user", FieldKind.CATEGORICAL)])
    >>> batch = Batch(SparseFeatures(["user"], torch.tensor([11, 12]), torch.ones(2, dtype=torch.int32)),
    ...               dense=torch.zeros(2, 0), labels=torch.zeros(2), ts=torch.zeros(2, dtype=torch.float64))
    >>> _ = model(batch, train=True)    # rows for 11 and 12
    >>> bool(np.allclose(fused_logits(model, batch), model(batch).detach().numpy(), atol=1e-6))
    True
    """
    (table,) = model.tables.values()
    values, lengths = _keyed_ids(batch, [s.name for s in model.embeddings.specs])
    slots = table.slots(values, 0.0, train=False) if slots is None else slots
    out = np.empty(len(batch), np.float32)
    storage = table.storage
    weight = model.dense.weight.detach().reshape(-1).numpy()
    addresses = storage.addresses()
    _score_rows(slots, lengths, _dense(batch), storage.chunk_rows, addresses[ROWS], addresses[SEQ], table.config.dim,
                weight, np.float32(model.bias.item()), out)
    return out


def fused_model(model: OnlineModel) -> bool:
    """Whether `FusedStep` learns `model` as its module would: an `OnlineFM` or a
    `LogisticRegression` (the classes themselves, not subclasses) with the BCE loss and sparse
    features, whose table keeps host float32 rows."""
    if type(model) not in (OnlineFM, LogisticRegression) or model.config.loss != "bce" or len(model.tables) != 1:
        return False
    (table,) = model.tables.values()
    return table.config.dtype == "float32" and torch.device(table.config.device).type == "cpu"


def plain_adagrad(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether `optimizer` steps as the fused dense step does: `torch.optim.Adagrad` without
    lr_decay, weight_decay or maximize."""
    if not isinstance(optimizer, torch.optim.Adagrad):
        return False
    group = optimizer.param_groups[0]
    return not (group["lr_decay"] or group["weight_decay"] or group.get("maximize"))


def _keyed_ids(batch: Batch, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The batch's ids and int32 lengths, key-major in the order of `keys` (the model's)."""
    sparse = batch.sparse
    if sparse.keys() == list(keys):
        values, lengths = sparse.values().numpy(), sparse.lengths().numpy()
    else:
        parts = [sparse[key] for key in keys]
        values = torch.cat([p.values for p in parts]).numpy()
        lengths = torch.cat([p.lengths for p in parts]).numpy()
    return values, np.ascontiguousarray(lengths, np.int32)


def _dense(batch: Batch) -> np.ndarray:
    return np.ascontiguousarray(batch.dense.numpy(), np.float32)
