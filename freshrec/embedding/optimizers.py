"""Row-wise sparse optimizers: update only the embedding rows a batch touched.

A table gathers the unique rows of a batch (and their optimizer state) into float32 arrays,
sums the gradients of duplicate ids with `coalesce`, calls `step` once, and scatters the
rows and state back. Untouched rows and their state are never read or written, so their
moments do not decay (TorchRec's row-wise/lazy optimizers, `torch.optim.SparseAdam`).

The arithmetic is float32 and follows torch's formulas for SGD, sparse Adagrad and
SparseAdam; each kernel is one numba pass over the rows that releases the GIL.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np

__all__ = ["FTRL", "SGD", "Adagrad", "Adam", "RowOptimizer", "coalesce", "optimizer_from_name"]


class RowOptimizer(Protocol):
    """Updates gathered rows in place from their summed gradients.

    `rows` and `grads` are float32 `[n, dim]` with one row per unique id; each state array is
    float32 `[n, width]` for the widths `state_widths(dim)` names, its rows initialised to
    `initial_state(dim)` when the table creates a row.
    """

    def state_widths(self, dim: int) -> dict[str, int]: ...

    def initial_state(self, dim: int) -> dict[str, float]: ...

    def step(self, rows: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray) -> None: ...


@dataclass(frozen=True)
class _RowKernel:
    """A `RowOptimizer`: a numba kernel, its hyperparameters and its named state.

    `state` holds `(name, width, initial value)`; width 0 means the embedding dim.
    """

    kernel: Callable[..., None]
    hyper: tuple[np.floating, ...]
    state: tuple[tuple[str, int, float], ...] = ()

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
        self.kernel(rows, grads, *(state[name] for name, _, _ in self.state), *self.hyper)


def _check_float32(array: np.ndarray, what: str, shape: tuple[int, ...]) -> None:
    """The kernels index without bounds checks: refuse anything but the agreed layout."""
    if array.dtype != np.float32 or array.shape != shape:
        raise ValueError(f"{what} must be float32 of shape {shape}, "
                         f"not {array.dtype} of shape {array.shape}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@numba.njit(nogil=True, cache=True)
def _sgd_step(rows, grads, lr):
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            rows[i, j] -= lr * grads[i, j]


@numba.njit(nogil=True, cache=True)
def _adagrad_step(rows, grads, accum, lr, eps):
    """torch sparse Adagrad: accum += g^2; w -= lr * g / (sqrt(accum) + eps)."""
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            g = grads[i, j]
            total = accum[i, j] + g * g
            accum[i, j] = total
            rows[i, j] -= lr * (g / (np.sqrt(total) + eps))


@numba.njit(nogil=True, cache=True)
def _adam_step(rows, grads, m, v, step, lr, beta1, beta2, eps):
    """torch SparseAdam's update, bias-corrected with each row's own step count."""
    one_minus_beta1 = np.float32(1.0 - beta1)
    one_minus_beta2 = np.float32(1.0 - beta2)
    for i in range(rows.shape[0]):
        t = step[i, 0] + np.float32(1.0)
        step[i, 0] = t
        correction1 = 1.0 - beta1 ** np.float64(t)
        correction2 = 1.0 - beta2 ** np.float64(t)
        step_size = np.float32(lr * np.sqrt(correction2) / correction1)
        for j in range(rows.shape[1]):
            g = grads[i, j]
            first = m[i, j] + (g - m[i, j]) * one_minus_beta1
            second = v[i, j] + (g * g - v[i, j]) * one_minus_beta2
            m[i, j] = first
            v[i, j] = second
            rows[i, j] -= step_size * (first / (np.sqrt(second) + eps))


@numba.njit(nogil=True, cache=True)
def _ftrl_step(rows, grads, z, n, alpha, beta, l1, l2):
    """FTRL-Proximal per coordinate (McMahan et al. 2013, algorithm 1); rows hold w."""
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            g = grads[i, j]
            before = n[i, j]
            after = before + g * g
            sigma = (np.sqrt(after) - np.sqrt(before)) / alpha
            zz = z[i, j] + g - sigma * rows[i, j]
            z[i, j] = zz
            n[i, j] = after
            if abs(zz) <= l1:
                rows[i, j] = np.float32(0.0)
            else:
                shrunk = zz - l1 if zz > 0 else zz + l1
                rows[i, j] = -shrunk / ((beta + np.sqrt(after)) / alpha + l2)


@dataclass(frozen=True)
class SGD:
    """Plain SGD on the touched rows: `w -= lr * g` (stateless)."""

    lr: float = 0.01

    def build(self) -> RowOptimizer:
        _require(self.lr >= 0, f"lr must be >= 0, not {self.lr}")
        return _RowKernel(_sgd_step, (np.float32(self.lr),))


@dataclass(frozen=True)
class Adagrad:
    """Row-wise Adagrad with torch's sparse formula; state `accum` starts at `initial_accumulator`."""

    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator: float = 0.0

    def build(self) -> RowOptimizer:
        _require(self.lr >= 0 and self.eps >= 0 and self.initial_accumulator >= 0,
                 f"lr, eps and initial_accumulator must be >= 0: {self}")
        return _RowKernel(_adagrad_step, (np.float32(self.lr), np.float32(self.eps)),
                          (("accum", 0, float(self.initial_accumulator)),))


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
def _sum_groups(grads, order, group, out):
    for i in range(order.shape[0]):
        source = order[i]
        target = group[i]
        for j in range(grads.shape[1]):
            out[target, j] += grads[source, j]


def coalesce(slots: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the gradient rows of repeated slots: (sorted unique slots, their summed rows).

    Rows of one slot are added in their batch order, in the dtype of `grads`.

    >>> import numpy as np
    >>> slots, summed = coalesce(np.array([5, 2, 5, 5]), np.arange(8, dtype=np.float32).reshape(4, 2))
    >>> slots.tolist(), summed.tolist()
    ([2, 5], [[2.0, 3.0], [10.0, 13.0]])
    """
    slots = np.asarray(slots, dtype=np.int64)
    if slots.ndim != 1 or grads.ndim != 2 or len(slots) != len(grads):
        raise ValueError(f"slots [n] and grads [n, dim] must agree, not {slots.shape} and {grads.shape}")
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    summed = np.zeros((int(first.sum()), grads.shape[1]), dtype=grads.dtype)
    _sum_groups(grads, order, np.cumsum(first) - 1, summed)
    return ordered[first], summed
