"""Per-row sequence locks: a reader in another process never sees a row half-way through an update.

A table shared between processes (`RowStorage.share`) keeps one int64 counter per row beside its
rows ("seq", in chunks like the rows). The one writer makes a row's counter odd before it writes the
row and even again after (`write_begin`, `write_end`); a reader (`read_row`) copies the row between
two reads of the counter and keeps the copy only when both saw the same even value, else it tries
again. Writers never wait; a reader waits only while that one row is being written (tens of
nanoseconds). A row whose writer died between the two (a SIGKILLed trainer) stays odd: after
`SPINS` tries the reader gives up and the row reads as absent, until a trainer takes the tables
over with new counters.

Tables that are not shared have no counters: `seq` is an empty array and every call is a no-op
(a branch on its length), so the same kernels serve both.

>>> import numba, numpy as np
>>> rows, seq = np.arange(4, dtype=np.float32), np.zeros(1, np.int64)
>>> row_bases, seq_bases = np.array([rows.ctypes.data]), np.array([seq.ctypes.data])
>>> @numba.njit
... def write_then_read(row_bases, seq_bases, out):
...     write_begin(seq_bases, 0, 0)
...     odd = seq_bases[0]                       # (the address: a reader now would retry)
...     write_end(seq_bases, 0, 0)
...     return read_row(row_bases, seq_bases, 0, 0, 4, out)
>>> out = np.empty(4, np.float32)
>>> write_then_read(row_bases, seq_bases, out), out.tolist(), seq.tolist()
(True, [0.0, 1.0, 2.0, 3.0], [2])
"""

from __future__ import annotations

import numba
import numpy as np

from freshrec._words import f32_at, fence_acquire, fence_release, load_acquire, load_word, store_release, store_word

__all__ = ["NO_SEQ", "SPINS", "read_row", "write_begin", "write_end"]

SPINS = 1 << 16   # tries before a reader takes a row that stays odd for absent (its writer died)
NO_SEQ = np.zeros(0, np.int64)   # the counters of a table that is not shared: none


@numba.njit(nogil=True, cache=True, inline="always")
def write_begin(seq_bases, chunk, row):
    """Mark row `row` of chunk `chunk` as being written (its counter odd), before writing it."""
    if len(seq_bases):
        at = seq_bases[chunk] + row * 8
        store_word(at, load_word(at) + 1)
        fence_release()


@numba.njit(nogil=True, cache=True, inline="always")
def write_end(seq_bases, chunk, row):
    """Mark the row written (its counter even again), after its last store."""
    if len(seq_bases):
        at = seq_bases[chunk] + row * 8
        store_release(at, load_word(at) + 1)


@numba.njit(nogil=True, cache=True, inline="always")
def read_row(bases, seq_bases, chunk, row, width, out):
    """Copy the `width` float32 values of the row into `out` as one consistent version; False (and
    `out` undefined) when the row stayed mid-write for `SPINS` tries."""
    start = bases[chunk] + row * width * 4
    src = numba.carray(f32_at(start), width)
    if len(seq_bases) == 0:
        for j in range(width):
            out[j] = src[j]
        return True
    at = seq_bases[chunk] + row * 8
    for _ in range(SPINS):
        before = load_acquire(at)
        if before & 1:
            continue
        for j in range(width):
            out[j] = src[j]
        fence_acquire()
        if load_word(at) == before:
            return True
    return False
