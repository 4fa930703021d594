"""Which rank owns an id: jump consistent hashing (Lamping and Veach, 2014).

`owners(ids, world)` gives each id a rank in `[0, world)`. Growing the group from `n` to `n + 1`
ranks moves only the ids the new rank takes (about 1 in `n + 1`), and shrinking it moves only the
ids of the rank that leaves, so a restart with another world size moves few rows
(`freshrec.cluster.reshard`).

>>> import numpy as np
>>> ids = np.arange(1, 100_001, dtype=np.int64) * 2654435761
>>> two, three = owners(ids, 2), owners(ids, 3)
>>> sorted(set(two.tolist())), sorted(set(three.tolist()))
([0, 1], [0, 1, 2])
>>> moved = two != three                          # only to the new rank, about a third of them
>>> bool((three[moved] == 2).all()), round(float(moved.mean()), 2)
(True, 0.33)
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["owners"]

_MULTIPLIER = np.uint64(2862933555777941757)


@numba.njit(nogil=True, cache=True)
def _jump(keys, buckets, out):
    for i in range(len(keys)):
        key = np.uint64(keys[i])
        b, j = -1, 0
        while j < buckets:
            b = j
            key = key * _MULTIPLIER + np.uint64(1)
            j = np.int64(float(b + 1) * (2147483648.0 / float((key >> np.uint64(33)) + np.uint64(1))))
        out[i] = b


def owners(ids: np.ndarray, world: int) -> np.ndarray:
    """The owner rank of each id (int64 ids, any sign; int64 ranks in `[0, world)`)."""
    if world < 1:
        raise ValueError(f"world must be >= 1, not {world}")
    keys = np.ascontiguousarray(ids, np.int64).view(np.uint64)
    out = np.empty(len(keys), np.int64)
    if world == 1:
        out[:] = 0
    else:
        _jump(keys, world, out)
    return out
