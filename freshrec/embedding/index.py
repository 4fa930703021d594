"""`IdIndex`: a 64-bit id -> row hash index (open addressing, linear probing) built on numba.

Ids are positive int64 (as `freshrec._hashing` makes them), so a key of 0 marks an
empty slot and -1 a deleted one (a tombstone). Each slot is two int64 words side by side, key
then row, so a probe touches one cache line. Every operation is one numba call over a whole
array of ids, with the GIL released.

>>> index = IdIndex()
>>> index.insert(np.array([7, 11]), np.array([0, 1]))
>>> index.lookup(np.array([11, 5, 7])).tolist()
[1, -1, 0]
>>> index.delete(np.array([7]))
1
>>> index.lookup(np.array([7, 11])).tolist(), len(index)
([-1, 1], 1)

Concurrency: one writer thread, any number of reader threads. The slot array lives in an
immutable `IndexState`; `resize` builds a complete new state and publishes it with one attribute
assignment, so a reader that took a state sees a whole index (an old one at worst, never a
half-rehashed one). An insert writes the row before it publishes the key (a release store; the
reader loads the key with an acquire load), so a reader that finds an id also finds its row.
A reader may miss ids inserted while it runs. The row it gets for an id that is being deleted at
the same moment is unspecified: a table reuses freed rows. Readers in other processes map a shared
index's slots (`share`, `freshrec.share`) and follow its resizes through the area's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from freshrec._words import AHEAD, prefetch

__all__ = ["IdIndex", "IndexState", "first_occurrences"]

EMPTY = 0
TOMBSTONE = -1
_FIB = np.uint64(0x9E3779B97F4A7C15)


def _slot_ptr(builder, context, sig, args):
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    return builder.gep(ary.data, [args[1]])


@intrinsic
def _load_acquire(typingctx, table, at):
    """`table[at]` (int64) as an atomic acquire load: later loads are not moved before it."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot_ptr(builder, context, sig, args), "acquire", 8)
    return types.int64(table, at), codegen


@intrinsic
def _store_release(typingctx, table, at, value):
    """`table[at] = value` (int64) as an atomic release store: earlier stores land first."""
    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _slot_ptr(builder, context, sig, args), "release", 8)
    return types.void(table, at, value), codegen


@numba.njit(inline="always")
def _home(key, bits):
    """Fibonacci hashing: the top `bits` bits of key * 2^64/phi."""
    return np.int64((np.uint64(key) * _FIB) >> np.uint64(64 - bits))


@numba.njit(nogil=True, cache=True)
def _first_occurrences(ids, bits, keys, numbers, unique, inverse):
    n = 0
    mask = (1 << bits) - 1
    for i in range(len(ids)):
        at = _home(ids[i], bits)
        while keys[at] != 0 and keys[at] != ids[i]:
            at = (at + 1) & mask
        if keys[at] == 0:
            keys[at], numbers[at], unique[n] = ids[i], n, ids[i]
            n += 1
        inverse[i] = numbers[at]
    return n


def first_occurrences(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids in order of first occurrence, each id's position among them): what
    `np.unique(ids, return_inverse=True)` gives, unsorted, in one hashed pass. Ids must be > 0.

    >>> unique, inverse = first_occurrences(np.array([9, 4, 9, 7, 4]))
    >>> unique.tolist(), inverse.tolist()
    ([9, 4, 7], [0, 1, 0, 2, 1])
    """
    ids = np.ascontiguousarray(ids, np.int64)
    bits = _bits_for(2 * len(ids))
    unique, inverse = np.empty(len(ids), np.int64), np.empty(len(ids), np.int64)
    n = _first_occurrences(ids, bits, np.zeros(1 << bits, np.int64), np.empty(1 << bits, np.int64), unique, inverse)
    return unique[:n], inverse


@numba.njit(nogil=True, cache=True)
def _lookup(table, bits, ids, out):
    mask = (1 << bits) - 1
    for i in range(len(ids)):
        if i + AHEAD < len(ids):  # the home slot of a later id: its cache miss overlaps this one's
            prefetch(table.ctypes.data + 16 * _home(ids[i + AHEAD], bits))
        key = ids[i]
        at = _home(key, bits)
        out[i] = -1
        while key > 0:
            found = _load_acquire(table, 2 * at)
            if found == key:
                out[i] = table[2 * at + 1]
                break
            if found == EMPTY:
                break
            at = (at + 1) & mask


@numba.njit(nogil=True, cache=True)
def _insert(table, bits, ids, rows, start, filled, max_filled):
    """Upsert ids[start:] until done or until a new key would push `filled` past `max_filled`;
    returns (where it stopped, filled, keys added)."""
    mask = (1 << bits) - 1
    added = 0
    for i in range(start, len(ids)):
        key = ids[i]
        at = _home(key, bits)
        free = -1
        while True:
            found = table[2 * at]
            if found == key:
                free = at
                break
            if found == TOMBSTONE and free < 0:
                free = at
            if found == EMPTY:
                if free < 0:
                    if filled >= max_filled:
                        return i, filled, added
                    filled += 1
                    free = at
                added += 1
                break
            at = (at + 1) & mask
        table[2 * free + 1] = rows[i]
        _store_release(table, 2 * free, key)
    return len(ids), filled, added


@numba.njit(nogil=True, cache=True)
def _delete(table, bits, ids):
    mask = (1 << bits) - 1
    removed = 0
    for i in range(len(ids)):
        key = ids[i]
        at = _home(key, bits)
        while True:
            found = table[2 * at]
            if found == key:
                _store_release(table, 2 * at, TOMBSTONE)
                removed += 1
                break
            if found == EMPTY:
                break
            at = (at + 1) & mask
    return removed


@numba.njit(nogil=True, cache=True)
def _rehash(old, table, bits):
    mask = (1 << bits) - 1
    for s in range(len(old) // 2):
        key = old[2 * s]
        if key > 0:
            at = _home(key, bits)
            while table[2 * at] != EMPTY:
                at = (at + 1) & mask
            table[2 * at] = key
            table[2 * at + 1] = old[2 * s + 1]


@dataclass(frozen=True)
class IndexState:
    """One published generation of the index: `table` holds (key, row) pairs in 2**bits slots."""

    table: np.ndarray
    bits: int

    @property
    def capacity(self) -> int:
        return 1 << self.bits


def _bits_for(slots: int) -> int:
    return max(3, int(slots - 1).bit_length())


class IdIndex:
    """Open-addressing id -> row index; grows (rehashing) before the load passes `max_load`.

    `capacity` is the initial number of slots (rounded up to a power of two). Tombstones count
    towards the load; a rehash drops them. Growth doubles the slots for the ids present and
    coming, so the load after a rehash is about 0.3 and 16 bytes a slot cost 27-53 bytes an id.
    """

    def __init__(self, capacity: int = 1024, max_load: float = 0.6) -> None:
        self.max_load = max_load
        self.state = IndexState(np.zeros(2 << _bits_for(capacity), np.int64), _bits_for(capacity))
        self._live = 0
        self._filled = 0
        self._allocate = _zeros
        self._resized = None

    def share(self, allocate, resized=None) -> None:
        """Keep the slots in arrays from `allocate(bits)` (int64, zeroed, 2 << bits words: memory other
        processes map, see `freshrec.share`) from now on, copying the current ones; `resized()` is
        called after each resize publishes its state."""
        self._allocate, self._resized = allocate, resized
        table = allocate(self.state.bits)
        table[:] = self.state.table
        self.state = IndexState(table, self.state.bits)

    def __len__(self) -> int:
        return self._live

    @property
    def capacity(self) -> int:
        return self.state.capacity

    @property
    def nbytes(self) -> int:
        return self.state.table.nbytes

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id, -1 where absent (always for ids <= 0). Safe from any thread."""
        state = self.state
        out = np.empty(len(ids), np.int64)
        _lookup(state.table, state.bits, np.ascontiguousarray(ids, np.int64), out)
        return out

    def insert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Map each id to its row (an id already present gets the new row); grows as needed."""
        ids = np.ascontiguousarray(ids, np.int64)
        rows = np.ascontiguousarray(rows, np.int64)
        if len(ids) and ids.min() <= 0:
            raise ValueError("ids must be positive")
        done = 0
        while done < len(ids):
            state = self.state
            done, self._filled, added = _insert(state.table, state.bits, ids, rows, done, self._filled,
                                                int(self.max_load * state.capacity))
            self._live += added
            if done < len(ids):
                self.resize(2 * (self._live + len(ids) - done))

    def delete(self, ids: np.ndarray) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""
        state = self.state
        removed = _delete(state.table, state.bits, np.ascontiguousarray(ids, np.int64))
        self._live -= removed
        return removed

    def resize(self, capacity: int) -> None:
        """Rehash into max(capacity, what the live ids need) slots, dropping tombstones, and publish
        the new state in one assignment."""
        bits = _bits_for(max(capacity, int(self._live / self.max_load) + 1))
        table = self._allocate(bits)
        _rehash(self.state.table, table, bits)
        self.state = IndexState(table, bits)
        self._filled = self._live
        if self._resized is not None:
            self._resized()


def _zeros(bits: int) -> np.ndarray:
    """The default slot allocator: zeroed memory of this process."""
    return np.zeros(2 << bits, np.int64)
