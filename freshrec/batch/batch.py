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


@numba.njit(nogil=True, cache=True)
def _event_time_parts(ts, size, window):
    """Rows per micro-batch: one starts at the first row `size` rows, or at least `window` of
    event time, after the first row of the one before."""
    sizes, n, start = np.empty(len(ts), np.int64), 0, 0
    for i in range(1, len(ts)):
        if i - start >= size or ts[i] - ts[start] >= window:
            sizes[n], n, start = i - start, n + 1, i
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
        """Rows per micro-batch: consecutive micro-batches of at most `size` rows; with `window`,
        each also ends before its first row at least `window` of event time after its own first
        row, so a slow stream learns in small micro-batches and a fast one in full ones (the cuts
        are a function of the rows alone).

        >>> import torch
        >>> batch = Batch(SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)),
        ...               torch.zeros(6, 0), torch.zeros(6), torch.tensor([0.0, 1, 2, 30, 31, 90], dtype=torch.float64))
        >>> batch.sizes(4).tolist(), batch.sizes(2, window=10.0).tolist()
        ([4, 2], [2, 1, 2, 1])
        """
        if size < 1:
            raise ValueError(f"micro-batches must hold at least one row, not {size}")
        if window is None:
            rows = len(self)
            return np.minimum(size, rows - np.arange(0, rows, size, dtype=np.int64))
        return _event_time_parts(self.ts.cpu().numpy(), size, window)

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
