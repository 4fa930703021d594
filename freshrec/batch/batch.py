"""`Batch`: the one typed micro-batch that flows between pipeline, model and trainer.

>>> import torch
>>> from freshrec.batch.sparse import SparseFeatures
>>> batch = Batch(SparseFeatures(["user"], torch.tensor([3, 4]), torch.ones(2, dtype=torch.int32)),
...               dense=torch.zeros(2, 1), labels=torch.tensor([1.0, 0.0]),
...               ts=torch.tensor([10.0, 11.0], dtype=torch.float64), dense_keys=("price",))
>>> len(batch), batch.to("cpu").sparse["user"].values.tolist()
(2, [3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import torch

from freshrec.batch.sparse import SparseFeatures, pin
from freshrec.events.event import USER


def micro_batch_sizes(ts: np.ndarray, size: int, window: float | None = None, users: np.ndarray | None = None,
                      known: np.ndarray | None = None) -> np.ndarray:
    """`Batch.sizes` on the rows' event times `ts` and (with a `window`) their users' ids `users`
    where `known` (None: no user known): e.g. for the rows of a chunk before it is featurised.

    >>> micro_batch_sizes(np.array([0.0, 0, 5, 6]), 3, window=2.0).tolist()
    [2, 2]
    """
    if size < 1:
        raise ValueError(f"micro-batches must hold at least one row, not {size}")
    rows = len(ts)
    if window is None:
        return np.minimum(size, rows - np.arange(0, rows, size, dtype=np.int64))
    if users is None:
        users, known = np.zeros(rows, np.int64), np.zeros(rows, np.bool_)
    return _event_time_parts(np.ascontiguousarray(ts, np.float64), users, known, size, window)


@numba.njit(nogil=True, cache=True)
def _event_time_parts(ts, users, known, size, window):
    """Rows per micro-batch: one starts at the first row `size` rows, or at least `window` of
    event time, after the first row of the one before, or whose user (`users[i]` where
    `known[i]`) already has a row in the one before. The users of the open micro-batch are kept
    in a small open-addressing set (`slots`, cleared through `used` when a micro-batch ends)."""
    capacity = 1 << max(4, int(np.ceil(np.log2(2 * min(size, max(len(ts), 1))))))
    slots, filled = np.zeros(capacity, np.int64), np.zeros(capacity, np.bool_)
    used, n_used = np.empty(min(size, max(len(ts), 1)), np.int64), 0
    sizes, n, start = np.empty(len(ts), np.int64), 0, 0
    for i in range(len(ts)):
        slot = -1
        if known[i]:
            slot = (users[i] * 0x9E3779B97F4A7C15) & (capacity - 1)
            while filled[slot] and slots[slot] != users[i]:
                slot = (slot + 1) & (capacity - 1)
        if i > start and (i - start >= size or ts[i] - ts[start] >= window or (slot >= 0 and filled[slot])):
            sizes[n], n, start = i - start, n + 1, i
            for j in range(n_used):
                filled[used[j]] = False
            n_used = 0
            if slot >= 0:
                slot = (users[i] * 0x9E3779B97F4A7C15) & (capacity - 1)
        if slot >= 0 and not filled[slot]:
            slots[slot], filled[slot] = users[i], True
            used[n_used], n_used = slot, n_used + 1
    if len(ts):
        sizes[n], n = len(ts) - start, n + 1
    return sizes[:n]


@dataclass(frozen=True)
class Batch:
    """Ids (`sparse`), dense float32 features `[B, D]`, labels float32 `[B]`, event times float64 `[B]`.

    `dense_keys` names the dense columns in order. A missing label is NaN.
    """

    sparse: SparseFeatures
    dense: torch.Tensor
    labels: torch.Tensor
    ts: torch.Tensor
    dense_keys: tuple[str, ...] = ()
    targets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        rows = self.labels.shape[0]
        if self.dense.dtype != torch.float32 or self.dense.dim() != 2 or self.dense.shape[0] != rows:
            raise ValueError(f"dense must be float32 [{rows}, D], got {self.dense.dtype} "
                             f"{list(self.dense.shape)}")
        if self.dense.shape[1] != len(self.dense_keys):
            raise ValueError(f"{self.dense.shape[1]} dense columns but {len(self.dense_keys)} names")
        if self.sparse.keys() and self.sparse.stride() != rows:
            raise ValueError(f"sparse features have {self.sparse.stride()} rows, labels {rows}")
        if self.ts.shape[0] != rows:
            raise ValueError(f"{self.ts.shape[0]} timestamps for {rows} rows")
        if self.targets is not None and (self.targets.dtype != torch.float32 or self.targets.shape != (rows,)):
            raise ValueError(f"targets must be float32 [{rows}], got {self.targets.dtype} {list(self.targets.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def sizes(self, size: int, window: float | None = None) -> np.ndarray:
        """Rows per micro-batch: consecutive micro-batches of at most `size` rows. With `window`
        (cut by event time), each also ends before its first row at least `window` of event time
        after its own first row, so a slow stream learns in small micro-batches and a fast one in
        full ones, and before a row whose user (the `user_id` feature, where the batch has one)
        already has a row in it, so each user's events are learned in order: the next event of a
        user is scored by a model that has learned the one before, even when a burst of them
        shares one timestamp. The cuts are a function of the rows alone.

        >>> import torch
        >>> batch = Batch(SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)),
        ...               torch.zeros(6, 0), torch.zeros(6), torch.tensor([0.0, 1, 2, 30, 31, 90], dtype=torch.float64))
        >>> batch.sizes(4).tolist(), batch.sizes(2, window=10.0).tolist()
        ([4, 2], [2, 1, 2, 1])
        >>> users = SparseFeatures([USER], torch.tensor([7, 8, 7, 9]), torch.ones(4, dtype=torch.int32))
        >>> Batch(users, torch.zeros(4, 0), torch.zeros(4), torch.zeros(4, dtype=torch.float64)).sizes(4, 1.0).tolist()
        [2, 2]
        """
        users, known = self._users() if window is not None else (None, None)
        return micro_batch_sizes(self.ts.cpu().numpy(), size, window, users, known)

    def _users(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's first `user_id` id and whether it has one (none known without the feature)."""
        rows = len(self)
        if USER not in self.sparse.keys():
            return np.zeros(rows, np.int64), np.zeros(rows, np.bool_)
        jagged = self.sparse[USER]
        lengths, starts = jagged.lengths.cpu().numpy(), jagged.offsets[:-1].cpu().numpy()
        known = lengths > 0
        users = np.zeros(rows, np.int64)
        users[known] = jagged.values.cpu().numpy()[starts[known]]
        return users, known

    def split(self, size: int | Sequence[int], window: float | None = None) -> list[Batch]:
        """The micro-batches of `sizes(size, window)`, or of the row counts listed (views where
        possible).

        >>> import torch
        >>> batch = Batch(SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)),
        ...               torch.zeros(3, 0), torch.zeros(3), torch.zeros(3, dtype=torch.float64))
        >>> [len(part) for part in batch.split(2)], [len(part) for part in batch.split([1, 2])]
        ([2, 1], [1, 2])
        """
        sizes = self.sizes(size, window).tolist() if isinstance(size, int) else list(size)
        if not sizes:
            return []
        labels = torch.split(self.labels, sizes)
        sparse = self.sparse.split(sizes) if self.sparse.keys() else [self.sparse] * len(labels)
        targets = [None] * len(labels) if self.targets is None else torch.split(self.targets, sizes)
        parts = zip(sparse, torch.split(self.dense, sizes), labels, torch.split(self.ts, sizes), targets)
        return [Batch(sparse, dense, labels, ts, self.dense_keys, targets)
                for sparse, dense, labels, ts, targets in parts]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy on `device` (event times stay float64)."""
        targets = None if self.targets is None else self.targets.to(device, non_blocking=non_blocking)
        return Batch(self.sparse.to(device, non_blocking), self.dense.to(device, non_blocking=non_blocking),
                     self.labels.to(device, non_blocking=non_blocking),
                     self.ts.to(device, non_blocking=non_blocking), self.dense_keys, targets)

    def pin_memory(self) -> Batch:
        """Page-locked copy for asynchronous host-to-device copies; unchanged without an accelerator."""
        return Batch(self.sparse.pin_memory(), pin(self.dense), pin(self.labels), pin(self.ts),
                     self.dense_keys, None if self.targets is None else pin(self.targets))
