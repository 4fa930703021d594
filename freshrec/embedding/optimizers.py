"""Row-wise sparse optimizers: update only the embedding rows a batch touched.

A table sums the gradients of duplicate ids (`SlotCoalescer`, or `coalesce` for any keys) and
calls `step_at` once to update the unique rows and their optimizer state where they lie in
host float32 storage; rows elsewhere (on a GPU, or stored in 16 bits) it gathers into float32
tensors on their device, steps with `step_tensors` (the same formulas in torch ops) and scatters
back. Untouched rows and their state are never read or written, so their moments do not
decay (TorchRec's row-wise/lazy optimizers, `torch.optim.SparseAdam`).

The arithmetic is float32 and follows torch's formulas for SGD, sparse Adagrad and
SparseAdam; each kernel is one numba pass over the rows that releases the GIL, prefetching
rows a few ahead (random rows of a large table are cache misses).

>>> import numpy as np
>>> slots, grads = coalesce(np.array([7, 3, 7]), np.ones((3, 2), np.float32))
>>> slots.tolist(), grads.tolist()
([3, 7], [[1.0, 1.0], [2.0, 2.0]])
>>> optimizer = optimizer_from_name("adagrad", lr=0.5).build()
>>> optimizer.state_widths(2), optimizer.initial_state(2)
({'accum': 2}, {'accum': 0.0})
>>> rows = np.zeros((2, 2), np.float32)
>>> state = {"accum": np.zeros((2, 2), np.float32)}
>>> optimizer.step(rows, state, grads)
>>> rows.tolist(), state["accum"].tolist()
([[-0.5, -0.5], [-0.5, -0.5]], [[1.0, 1.0], [4.0, 4.0]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np
import torch

from freshrec._words import AHEAD, prefetch
from freshrec.embedding.seqlock import NO_SEQ, write_begin, write_end
from freshrec.embedding.storage import ROWS, SEQ, locate, prefetch_row, row_view

__all__ = ["FTRL", "SGD", "Adagrad", "Adam", "RowOptimizer", "SlotCoalescer", "coalesce",
           "optimizer_from_name", "row_step"]


class RowOptimizer(Protocol):
    """Updates rows in place from their summed gradients.

    `step` takes gathered rows: `rows` and `grads` are float32 `[n, dim]` with one row per
    unique id, each state array float32 `[n, width]` for the widths `state_widths(dim)` names,
    its rows initialised to `initial_state(dim)` when the table creates a row. `step_at`
    updates the rows `at` of host float32 `RowStorage` arrays where they lie, given their chunk
    addresses (`RowStorage.addresses()`), with the same arithmetic. Fused kernels call
    `row_step(kind, ..., hyper_array)` themselves, with the `stacked_state` addresses.
    """

    kind: int
    hyper_array: np.ndarray

    def state_widths(self, dim: int) -> dict[str, int]: ...

    def initial_state(self, dim: int) -> dict[str, float]: ...

    def step(self, rows: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray) -> None: ...

    def step_at(self, addresses: Mapping[str, np.ndarray], chunk_rows: int, at: np.ndarray,
                grads: np.ndarray) -> None: ...

    def stacked_state(self, addresses: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def step_tensors(self, rows: torch.Tensor, state: dict[str, torch.Tensor], grads: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class _RowKernel:
    """A `RowOptimizer`: a numba kernel, its hyperparameters and its named state.

    `state` holds `(name, width, initial value)`; width 0 means the embedding dim. The kernel
    takes `(chunk_rows, at, grads, row addresses, state addresses, counter addresses, *hyper)` - the
    state's chunk addresses stacked, int64 `[len(state), chunks]`; the rows' `seqlock` counters,
    empty unless shared - and updates row `at[i]` with `grads[i]`;
    `step` hands it the gathered arrays as single chunks. Fused kernels call it through `row_step`
    with `kind` and `hyper_array` (a numba function as an argument would defeat numba's cache).
    """

    kernel: Callable[..., None]
    hyper: tuple[np.floating, ...]
    state: tuple[tuple[str, int, float], ...] = ()
    per_event: bool = False   # takes a micro-batch's gradients times its events (see `Adagrad`)

    @property
    def kind(self) -> int:
        """The kernel's number for `row_step`."""
        return _KERNELS.index(self.kernel)

    @property
    def hyper_array(self) -> np.ndarray:
        """The hyperparameters as float64 (each kernel's float32 ones convert back exactly)."""
        return np.array(self.hyper, np.float64)

    def state_widths(self, dim: int) -> dict[str, int]:
        return {name: width or dim for name, width, _ in self.state}

    def initial_state(self, dim: int) -> dict[str, float]:
        return {name: initial for name, _, initial in self.state}

    def step(self, rows: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray) -> None:
        _check_float32(rows, "rows", rows.shape if rows.ndim == 2 else (-1, -1))
        _check_float32(grads, "grads", rows.shape)
        widths = self.state_widths(rows.shape[1])
        if set(state) != set(widths):
            raise ValueError(f"state must have the keys {sorted(widths)}, not {sorted(state)}")
        for name, width in widths.items():
            _check_float32(state[name], f"state[{name!r}]", (rows.shape[0], width))
        addresses = {name: np.array([array.ctypes.data], np.int64)
                     for name, array in {ROWS: rows, **state}.items()}
        self.step_at(addresses, max(len(rows), 1), np.arange(len(rows)), grads)

    def step_at(self, addresses: Mapping[str, np.ndarray], chunk_rows: int, at: np.ndarray,
                grads: np.ndarray) -> None:
        self.kernel(chunk_rows, at, grads, addresses[ROWS], self.stacked_state(addresses), addresses.get(SEQ, NO_SEQ),
                    *self.hyper)

    def stacked_state(self, addresses: Mapping[str, np.ndarray]) -> np.ndarray:
        """The state's chunk addresses as the kernel takes them: int64 `[len(state), chunks]`."""
        chunks = len(addresses[ROWS])
        return np.array([addresses[name] for name, _, _ in self.state], np.int64).reshape(len(self.state), chunks)

    def step_tensors(self, rows: torch.Tensor, state: dict[str, torch.Tensor], grads: torch.Tensor) -> None:
        """`step` on float32 tensors of any device (gathered rows, their state, summed gradients),
        in place, with torch ops: the same formulas, so a table on a GPU learns what one on the
        host does (up to the order of float32 additions)."""
        _TORCH_STEPS[self.kernel](rows, [state[name] for name, _, _ in self.state], grads,
                                  *(float(h) for h in self.hyper))


def _check_float32(array: np.ndarray, what: str, shape: tuple[int, ...]) -> None:
    """The kernels index without bounds checks: refuse anything but the agreed layout."""
    if array.dtype != np.float32 or array.shape != shape or not array.flags.c_contiguous:
        raise ValueError(f"{what} must be float32 of shape {shape} (C-contiguous), "
                         f"not {array.dtype} of shape {array.shape}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _sgd_step(chunk_rows, at, grads, rows, state, seq, lr):
    dim = grads.shape[1]
    for i in range(len(at)):
        if i + AHEAD < len(at):
            c, r = locate(chunk_rows, at[i + AHEAD])
            prefetch_row(rows, c, r, dim)
        c, r = locate(chunk_rows, at[i])
        w = row_view(rows, c, r, dim)
        write_begin(seq, c, r)
        for j in range(dim):
            w[j] -= lr * grads[i, j]
        write_end(seq, c, r)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adagrad_step(chunk_rows, at, grads, rows, state, seq, lr, eps, first_lr):
    """torch sparse Adagrad: accum += g^2; w -= lr * g / (sqrt(accum) + eps), column 0 with
    `first_lr` instead of `lr`."""
    dim, accum = grads.shape[1], state[0]
    for i in range(len(at)):
        if i + AHEAD < len(at):
            c, r = locate(chunk_rows, at[i + AHEAD])
            prefetch_row(rows, c, r, dim)
            prefetch_row(accum, c, r, dim)
        c, r = locate(chunk_rows, at[i])
        w, a = row_view(rows, c, r, dim), row_view(accum, c, r, dim)
        g = grads[i, 0]
        write_begin(seq, c, r)
        total = a[0] + g * g
        a[0] = total
        w[0] -= first_lr * (g / (np.sqrt(total) + eps))
        for j in range(1, dim):  # no branch in the loop: it vectorises
            g = grads[i, j]
            total = a[j] + g * g
            a[j] = total
            w[j] -= lr * (g / (np.sqrt(total) + eps))
        write_end(seq, c, r)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adam_step(chunk_rows, at, grads, rows, state, seq, lr, beta1, beta2, eps):
    """torch SparseAdam's update, bias-corrected with each row's own step count."""
    m, v, step = state[0], state[1], state[2]
    one_minus_beta1 = np.float32(1.0 - beta1)
    one_minus_beta2 = np.float32(1.0 - beta2)
    dim = grads.shape[1]
    for i in range(len(at)):
        if i + AHEAD < len(at):
            c, r = locate(chunk_rows, at[i + AHEAD])
            for bases, width in ((rows, dim), (m, dim), (v, dim), (step, 1)):
                prefetch_row(bases, c, r, width)
        c, r = locate(chunk_rows, at[i])
        w, mi, vi, count = (row_view(rows, c, r, dim), row_view(m, c, r, dim),
                            row_view(v, c, r, dim), row_view(step, c, r, 1))
        t = count[0] + np.float32(1.0)
        count[0] = t
        correction1 = 1.0 - beta1 ** np.float64(t)
        correction2 = 1.0 - beta2 ** np.float64(t)
        step_size = np.float32(lr * np.sqrt(correction2) / correction1)
        write_begin(seq, c, r)
        for j in range(dim):
            g = grads[i, j]
            first = mi[j] + (g - mi[j]) * one_minus_beta1
            second = vi[j] + (g * g - vi[j]) * one_minus_beta2
            mi[j] = first
            vi[j] = second
            w[j] -= step_size * (first / (np.sqrt(second) + eps))
        write_end(seq, c, r)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ftrl_step(chunk_rows, at, grads, rows, state, seq, alpha, beta, l1, l2):
    """FTRL-Proximal per coordinate (McMahan et al. 2013, algorithm 1); rows hold w."""
    z, n = state[0], state[1]
    dim = grads.shape[1]
    for i in range(len(at)):
        if i + AHEAD < len(at):
            c, r = locate(chunk_rows, at[i + AHEAD])
            for bases in (rows, z, n):
                prefetch_row(bases, c, r, dim)
        c, r = locate(chunk_rows, at[i])
        w, zi, ni = row_view(rows, c, r, dim), row_view(z, c, r, dim), row_view(n, c, r, dim)
        write_begin(seq, c, r)
        for j in range(dim):
            g = grads[i, j]
            before = ni[j]
            after = before + g * g
            sigma = (np.sqrt(after) - np.sqrt(before)) / alpha
            zz = zi[j] + g - sigma * w[j]
            zi[j] = zz
            ni[j] = after
            if abs(zz) <= l1:
                w[j] = np.float32(0.0)
            else:
                shrunk = zz - l1 if zz > 0 else zz + l1
                w[j] = -shrunk / ((beta + np.sqrt(after)) / alpha + l2)
        write_end(seq, c, r)


_KERNELS = (_sgd_step, _adagrad_step, _adam_step, _ftrl_step)


def _sgd_tensors(w, state, g, lr):
    w.sub_(lr * g)


def _adagrad_tensors(w, state, g, lr, eps, first_lr):
    accum = state[0]
    accum.addcmul_(g, g)
    step = g / (accum.sqrt() + eps)
    w[:, 1:].sub_(lr * step[:, 1:])
    w[:, :1].sub_(first_lr * step[:, :1])


def _adam_tensors(w, state, g, lr, beta1, beta2, eps):
    m, v, count = state
    count.add_(1.0)
    t = count.double()
    step_size = (lr * torch.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)).float()
    m.add_((g - m) * np.float32(1.0 - beta1))
    v.add_((g * g - v) * np.float32(1.0 - beta2))
    w.sub_(step_size * (m / (v.sqrt() + eps)))


def _ftrl_tensors(w, state, g, alpha, beta, l1, l2):
    z, n = state
    after = n + g * g
    sigma = (after.sqrt() - n.sqrt()) / alpha
    z.add_(g - sigma * w)
    n.copy_(after)
    shrunk = z - torch.sign(z) * l1
    w.copy_(torch.where(z.abs() <= l1, torch.zeros_like(w), -shrunk / ((beta + after.sqrt()) / alpha + l2)))


_TORCH_STEPS = {_sgd_step: _sgd_tensors, _adagrad_step: _adagrad_tensors, _adam_step: _adam_tensors,
                _ftrl_step: _ftrl_tensors}


@numba.njit(nogil=True, cache=True)
def row_step(kind, chunk_rows, at, grads, rows, state, seq, hyper):
    """The step of kernel number `kind` (`_RowKernel.kind`) with its `hyper_array`; `seq`: the rows'
    counter addresses (`seqlock`; empty for a table that is not shared)."""
    if kind == 0:
        _sgd_step(chunk_rows, at, grads, rows, state, seq, np.float32(hyper[0]))
    elif kind == 1:
        _adagrad_step(chunk_rows, at, grads, rows, state, seq, np.float32(hyper[0]), np.float32(hyper[1]),
                      np.float32(hyper[2]))
    elif kind == 2:
        _adam_step(chunk_rows, at, grads, rows, state, seq, hyper[0], hyper[1], hyper[2], np.float32(hyper[3]))
    else:
        _ftrl_step(chunk_rows, at, grads, rows, state, seq, np.float32(hyper[0]), np.float32(hyper[1]),
                   np.float32(hyper[2]), np.float32(hyper[3]))


@dataclass(frozen=True)
class SGD:
    """Plain SGD on the touched rows: `w -= lr * g` (stateless)."""

    lr: float = 0.01

    def build(self) -> RowOptimizer:
        _require(self.lr >= 0, f"lr must be >= 0, not {self.lr}")
        return _RowKernel(_sgd_step, (np.float32(self.lr),))


@dataclass(frozen=True)
class Adagrad:
    """Row-wise Adagrad with torch's sparse formula; state `accum` starts at `initial_accumulator`.

    `first_column_lr` (None: `lr`) is the learning rate of column 0 only - the linear weight
    of an FM table (`FMConfig.linear_lr`), which wants bigger steps than the factors.

    Per event: a table hands it a micro-batch's gradients (of the mean loss) times the events
    they average (`DynamicEmbedding.apply_gradients(events=...)`), so the accumulators sum one
    event's gradient scale whatever the micro-batch size and `initial_accumulator` damps the
    first steps of a row as much at 512 events as at 1. Without an initial accumulator nothing
    changes: Adagrad's steps do not depend on the gradients' scale.

    >>> import numpy as np
    >>> optimizer = Adagrad(lr=0.1, first_column_lr=0.5).build()
    >>> rows, state = np.zeros((1, 3), np.float32), {"accum": np.zeros((1, 3), np.float32)}
    >>> optimizer.step(rows, state, np.ones((1, 3), np.float32))
    >>> rows.astype(float).round(4).tolist()
    [[-0.5, -0.1, -0.1]]
    """

    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator: float = 0.0
    first_column_lr: float | None = None

    def build(self) -> RowOptimizer:
        first = self.lr if self.first_column_lr is None else self.first_column_lr
        _require(self.lr >= 0 and self.eps >= 0 and self.initial_accumulator >= 0 and first >= 0,
                 f"lr, eps, initial_accumulator and first_column_lr must be >= 0: {self}")
        return _RowKernel(_adagrad_step, (np.float32(self.lr), np.float32(self.eps), np.float32(first)),
                          (("accum", 0, float(self.initial_accumulator)),), per_event=True)


@dataclass(frozen=True)
class Adam:
    """Lazy Adam (`torch.optim.SparseAdam` semantics) with a per-row step count.

    Moments decay only when their row is touched, and bias correction uses that row's own
    count (state `step`, width 1), so a row first seen late starts like a fresh Adam.

    >>> import numpy as np
    >>> optimizer = Adam(lr=0.1).build()
    >>> rows, grads = np.zeros((1, 2), np.float32), np.array([[3.0, -0.5]], np.float32)
    >>> state = {name: np.zeros((1, width), np.float32)
    ...          for name, width in optimizer.state_widths(2).items()}
    >>> optimizer.step(rows, state, grads)
    >>> rows.astype(float).round(4).tolist(), state["step"].tolist()
    ([[-0.1, 0.1]], [[1.0]])
    """

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def build(self) -> RowOptimizer:
        _require(self.lr >= 0 and self.eps >= 0, f"lr and eps must be >= 0: {self}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"betas must be in [0, 1): {self}")
        hyper = (np.float64(self.lr), np.float64(self.beta1), np.float64(self.beta2),
                 np.float32(self.eps))
        return _RowKernel(_adam_step, hyper, (("m", 0, 0.0), ("v", 0, 0.0), ("step", 1, 0.0)))


@dataclass(frozen=True)
class FTRL:
    """FTRL-Proximal (McMahan et al. 2013) per coordinate, with L1 and L2 regularisation.

    State `z` and `n` (sum of squared gradients); after each step a row holds
    `w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)`,
    so a large `l1` gives exact zeros.

    >>> import numpy as np
    >>> optimizer = FTRL(alpha=1.0, l1=1.5).build()
    >>> rows = np.zeros((1, 2), np.float32)
    >>> state = {"z": np.zeros((1, 2), np.float32), "n": np.zeros((1, 2), np.float32)}
    >>> optimizer.step(rows, state, np.array([[1.0, -3.0]], np.float32))
    >>> rows.tolist()
    [[0.0, 0.375]]
    """

    alpha: float = 0.05
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0

    def build(self) -> RowOptimizer:
        _require(self.alpha > 0, f"alpha must be > 0, not {self.alpha}")
        _require(self.beta >= 0 and self.l1 >= 0 and self.l2 >= 0,
                 f"beta, l1 and l2 must be >= 0: {self}")
        hyper = tuple(np.float32(x) for x in (self.alpha, self.beta, self.l1, self.l2))
        return _RowKernel(_ftrl_step, hyper, (("z", 0, 0.0), ("n", 0, 0.0)))


_BY_NAME: dict[str, type[SGD | Adagrad | Adam | FTRL]] = {
    "sgd": SGD, "adagrad": Adagrad, "adam": Adam, "ftrl": FTRL}


def optimizer_from_name(name: str, **kwargs: float) -> SGD | Adagrad | Adam | FTRL:
    """The optimizer configuration a config file or command line names (case-insensitive).

    >>> optimizer_from_name("FTRL", alpha=0.1)
    FTRL(alpha=0.1, beta=1.0, l1=0.0, l2=0.0)
    >>> optimizer_from_name("rmsprop")
    Traceback (most recent call last):
    ...
    ValueError: unknown optimizer 'rmsprop'; valid names: sgd, adagrad, adam, ftrl
    """
    kind = _BY_NAME.get(name.lower())
    if kind is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(_BY_NAME)}")
    valid = [field.name for field in dataclasses.fields(kind)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{name.lower()} has no option {', '.join(unknown)}; "
                         f"valid options: {', '.join(valid)}")
    return kind(**kwargs)


@numba.njit(nogil=True, cache=True)
def _coalesce_dense(slots, grads, where, unique, summed):
    """First-occurrence coalescing through `where` (slot -> position, -1 when absent; left all -1)."""
    n = 0
    for i in range(len(slots)):
        if i + AHEAD < len(slots) and slots[i + AHEAD] >= 0:
            prefetch(where.ctypes.data + slots[i + AHEAD] * where.itemsize)
        slot = slots[i]
        if slot < 0:
            continue
        u = where[slot]
        if u < 0:
            u = n
            where[slot] = n
            unique[n] = slot
            n += 1
            for j in range(grads.shape[1]):
                summed[u, j] = np.float32(0.0) + grads[i, j]
        else:
            for j in range(grads.shape[1]):
                summed[u, j] += grads[i, j]
    for k in range(n):
        where[unique[k]] = -1
    return n


class SlotCoalescer:
    """`coalesce` without sorting, for slots below a known bound (negative slots are dropped).

    Unique slots come in order of first occurrence, each summed in batch order as `coalesce`
    sums it (so the sums are equal bit for bit). A slot -> position array sized to the bound
    and the output buffers are kept between calls: the results are views, valid until the next.

    >>> unique, summed = SlotCoalescer()(np.array([5, -1, 2, 5]), np.ones((4, 1), np.float32), 6)
    >>> unique.tolist(), summed.tolist()
    ([5, 2], [[2.0], [1.0]])
    """

    def __init__(self) -> None:
        self._where = np.zeros(0, np.int32)
        self._unique = np.zeros(0, np.int64)
        self._summed = np.zeros((0, 0), np.float32)

    def __call__(self, slots: np.ndarray, grads: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
        slots = np.ascontiguousarray(slots, np.int64)
        grads = np.ascontiguousarray(grads, np.float32)
        if slots.ndim != 1 or grads.ndim != 2 or len(slots) != len(grads):
            raise ValueError(f"slots [n] and grads [n, dim] must agree, not {slots.shape} and {grads.shape}")
        if len(slots) and slots.max() >= bound:
            raise ValueError(f"slot {slots.max()} is not below the bound {bound}")
        if bound > len(self._where):
            self._where = np.full(max(bound, len(self._where) * 3 // 2), -1, np.int32)
        if len(slots) > len(self._unique) or grads.shape[1] != self._summed.shape[1]:
            self._unique = np.empty(max(len(slots), len(self._unique) * 3 // 2), np.int64)
            self._summed = np.empty((len(self._unique), grads.shape[1]), np.float32)
        n = _coalesce_dense(slots, grads, self._where, self._unique, self._summed)
        return self._unique[:n], self._summed[:n]

    @property
    def nbytes(self) -> int:
        return self._where.nbytes + self._unique.nbytes + self._summed.nbytes


def coalesce(slots: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the float32 gradient rows of repeated slots (any int64 keys): (sorted unique slots,
    their summed rows), each slot's rows added in batch order as `SlotCoalescer` adds them.

    >>> import numpy as np
    >>> slots, summed = coalesce(np.array([5, 2, 5, 5]), np.arange(8, dtype=np.float32).reshape(4, 2))
    >>> slots.tolist(), summed.tolist()
    ([2, 5], [[2.0, 3.0], [10.0, 13.0]])
    """
    slots = np.asarray(slots, dtype=np.int64)
    if slots.ndim != 1 or grads.ndim != 2 or len(slots) != len(grads):
        raise ValueError(f"slots [n] and grads [n, dim] must agree, not {slots.shape} and {grads.shape}")
    keys, inverse = np.unique(slots, return_inverse=True)
    positions, summed = SlotCoalescer()(inverse, grads, len(keys))
    out = np.empty_like(summed)
    out[positions] = summed
    return keys, out
