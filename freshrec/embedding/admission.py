"""Admission: which unseen ids get an embedding row. Until admitted an id reads the shared zero
row and receives no update, so one-off ids (typos, bots, the long tail) cost no memory.

`CountAdmission(n)` admits an id once it has been seen `n` times, counted in a count-min sketch
(bounded memory: `width * depth` uint32 counters; it may over-count, never under-count, so an
id is admitted at its n-th sighting or, after a hash collision, a little earlier).
`ProbabilisticAdmission(p)` admits a fixed fraction p of ids, decided by a hash of the id, so
the same id gets the same answer in every batch and every process.

>>> policy = CountAdmission(admit_after=2)
>>> policy.admit(np.array([5, 9, 5])).tolist()     # 5 is seen twice in this batch
[True, False, True]
>>> policy.admit(np.array([9])).tolist()
[True]
>>> ProbabilisticAdmission(0.5, seed=1).admit(np.array([3, 3, 4, 4])).tolist()
[False, False, True, True]
"""

from __future__ import annotations

from typing import Protocol

import numba
import numpy as np

from freshrec._hashing import fmix64

__all__ = ["Admission", "CountAdmission", "CountMinSketch", "ProbabilisticAdmission"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TOP = np.uint32(0xFFFFFFFF)


@numba.njit(inline="always")
def _column(key, row, seed, bits):
    salt = fmix64(seed + np.uint64(row + 1) * _GOLDEN)
    return np.int64(fmix64(np.uint64(key) ^ salt) >> np.uint64(64 - bits))


@numba.njit(nogil=True, cache=True)
def _add(counters, seed, bits, ids):
    """Conservative update: raise only the counters below the new estimate."""
    depth = counters.shape[0]
    for i in range(len(ids)):
        low = _TOP
        for d in range(depth):
            low = min(low, counters[d, _column(ids[i], d, seed, bits)])
        if low < _TOP:
            low += np.uint32(1)
        for d in range(depth):
            at = _column(ids[i], d, seed, bits)
            counters[d, at] = max(counters[d, at], low)


@numba.njit(nogil=True, cache=True)
def _estimate(counters, seed, bits, ids, out):
    for i in range(len(ids)):
        low = _TOP
        for d in range(counters.shape[0]):
            low = min(low, counters[d, _column(ids[i], d, seed, bits)])
        out[i] = low


@numba.njit(nogil=True, cache=True)
def _below(ids, seed, threshold, out):
    salt = fmix64(seed ^ _GOLDEN)
    for i in range(len(ids)):
        out[i] = (fmix64(np.uint64(ids[i]) ^ salt) >> np.uint64(11)) < threshold


class CountMinSketch:
    """Approximate occurrence counts in `depth` rows of `width` uint32 counters (width rounded
    up to a power of two). Counters saturate at 2**32 - 1.

    >>> sketch = CountMinSketch(width=1024, depth=2)
    >>> sketch.add(np.array([4, 4, 8]))
    >>> sketch.estimate(np.array([4, 8, 15])).tolist()
    [2, 1, 0]
    """

    def __init__(self, width: int = 1 << 20, depth: int = 4, seed: int = 0) -> None:
        self.width = width
        self.depth = depth
        self.seed = seed
        self.counters = np.zeros(0, np.uint32)

    @property
    def _bits(self) -> int:
        return max(1, int(self.width - 1).bit_length())

    def _table(self) -> np.ndarray:
        if self.counters.size == 0:
            self.counters = np.zeros((self.depth, 1 << self._bits), np.uint32)
        return self.counters

    def add(self, ids: np.ndarray) -> None:
        """Count each occurrence of each id."""
        _add(self._table(), np.uint64(self.seed), self._bits, np.ascontiguousarray(ids, np.int64))

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Counts so far (uint32): never below the true count."""
        out = np.empty(len(ids), np.uint32)
        _estimate(self._table(), np.uint64(self.seed), self._bits, np.ascontiguousarray(ids, np.int64), out)
        return out


class Admission(Protocol):
    """Given the ids of a training batch that have no row, which of them get one now."""

    def admit(self, ids: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


class CountAdmission:
    """Admit an id once a count-min sketch has seen it `admit_after` times.

    All occurrences in one batch are counted before deciding, so they all get one answer.
    """

    def __init__(self, admit_after: int, width: int = 1 << 20, depth: int = 4, seed: int = 0) -> None:
        self.admit_after = admit_after
        self.sketch = CountMinSketch(width, depth, seed)

    def admit(self, ids: np.ndarray) -> np.ndarray:
        self.sketch.add(ids)
        return self.sketch.estimate(ids) >= self.admit_after

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"sketch": self.sketch.counters.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.sketch.counters = state["sketch"].copy()


class ProbabilisticAdmission:
    """Admit the ids whose hash (salted by `seed`) falls below a fraction `p` of the range."""

    def __init__(self, p: float, seed: int = 0) -> None:
        self.p = p
        self.seed = seed

    def admit(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids), np.bool_)
        _below(np.ascontiguousarray(ids, np.int64), np.uint64(self.seed), np.uint64(self.p * 2.0 ** 53), out)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Nothing to restore: the decision depends on the id and the seed alone."""
