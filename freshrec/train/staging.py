"""Micro-batches onto an accelerator: page-locked staging buffers reused across batches, and a feed
that copies the next batch on a side stream while the current one computes.

TorchRec's train pipeline is the model. Allocating page-locked memory per batch (`pin_memory()`)
costs more than the copy it speeds up, so `StagingPool` keeps a few sets ("slots") of page-locked
buffers and copies each batch's tensors into the next slot's, growing a buffer only when a batch
outgrows it (`allocations` counts them: after warm-up it stays still). `DeviceFeed` stages batch
i + 1 and issues its host-to-device copies on a side stream before handing out batch i, so the
copies run under batch i's compute; a slot is written again only after its copies finished.

A device batch keeps its ids and event times on the host: the tables' id index is there (see
`OnlineModel.place`), so the ids never make the round trip; lengths, dense features, labels and
targets go to the device.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> pool = StagingPool(pin=False)
>>> def batch(rows):
...     ids = SparseFeatures(["user_id"], torch.arange(1, rows + 1), torch.ones(rows, dtype=torch.int32))
...     return Batch(ids, torch.zeros(rows, 2), torch.ones(rows), torch.zeros(rows, dtype=torch.float64), ("a", "b"))
>>> staged = [pool.stage(batch(rows)) for rows in (64, 64, 32, 48, 64, 64)]
>>> pool.allocations, len(staged[3]), staged[3].labels.sum().item()   # 2 slots x 3 buffers, no more
(6, 48, 48.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from freshrec.batch import Batch, SparseFeatures

__all__ = ["DeviceFeed", "StagingPool"]

GROWTH = 1.5


class _Slot:
    """One set of staging buffers (flat, by name) and the event after which they may be rewritten."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.copied: torch.cuda.Event | None = None


class StagingPool:
    """`slots` sets of (page-locked, with `pin`; default: when CUDA is available) host buffers,
    used in turn by `stage`."""

    def __init__(self, pin: bool | None = None, slots: int = 2) -> None:
        if slots < 1:
            raise ValueError(f"a pool needs at least one slot, not {slots}")
        self.pin = torch.cuda.is_available() if pin is None else pin
        self._slots = [_Slot() for _ in range(slots)]
        self._next = 0
        self._current = self._slots[0]
        self.allocations = 0

    def stage(self, batch: Batch) -> Batch:
        """`batch` with its lengths, dense features, labels and targets copied into the next slot's
        buffers (ids and event times as they are); waits for that slot's last copies first."""
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.copied is not None:
            slot.copied.synchronize()
            slot.copied = None
        self._current = slot
        sparse = batch.sparse
        lengths = self._copy(slot, "lengths", sparse.lengths())
        targets = None if batch.targets is None else self._copy(slot, "targets", batch.targets)
        return Batch(SparseFeatures(sparse.keys(), sparse.values(), lengths, check=False),
                     self._copy(slot, "dense", batch.dense), self._copy(slot, "labels", batch.labels),
                     batch.ts, batch.dense_keys, targets)

    def copied(self, event: torch.cuda.Event) -> None:
        """The copies out of the slot `stage` last filled were issued up to `event`."""
        self._current.copied = event

    def _copy(self, slot: _Slot, name: str, tensor: torch.Tensor) -> torch.Tensor:
        size = tensor.numel()
        buffer = slot.buffers.get(name)
        if buffer is None or buffer.dtype != tensor.dtype or buffer.numel() < size:
            grown = buffer is not None and buffer.dtype == tensor.dtype
            capacity = max(size, int(buffer.numel() * GROWTH)) if grown else size
            buffer = torch.empty(max(capacity, 1), dtype=tensor.dtype, pin_memory=self.pin)
            slot.buffers[name] = buffer
            self.allocations += 1
        view = buffer[:size].view(tensor.shape)
        view.copy_(tensor)
        return view


class DeviceFeed:
    """Batches as (host batch, device batch) pairs, each device batch's copies issued on a side
    stream one batch ahead (see the module). On a CPU `device` the pairs are (batch, batch)."""

    def __init__(self, device: torch.device | str, pool: StagingPool | None = None) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.pool = pool or StagingPool(pin=self.cuda)
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None

    def __call__(self, batches: Iterable[Batch]) -> Iterator[tuple[Batch, Batch]]:
        if not self.cuda:
            for batch in batches:
                yield batch, batch
            return
        ahead = None
        for batch in batches:
            issued = self._issue(batch)
            if ahead is not None:
                yield self._ready(*ahead)
            ahead = (batch, *issued)
        if ahead is not None:
            yield self._ready(*ahead)

    def one(self, batch: Batch) -> Batch:
        """One batch on the device (no overlap)."""
        return next(iter(self([batch])))[1]

    def _issue(self, batch: Batch) -> tuple[Batch, torch.cuda.Event]:
        staged = self.pool.stage(batch)
        with torch.cuda.stream(self._stream):
            sparse = staged.sparse
            moved = Batch(SparseFeatures(sparse.keys(), sparse.values(), self._move(sparse.lengths()), check=False),
                          self._move(staged.dense), self._move(staged.labels), staged.ts, staged.dense_keys,
                          None if staged.targets is None else self._move(staged.targets))
            event = torch.cuda.Event()
            event.record(self._stream)
        self.pool.copied(event)
        return moved, event

    def _move(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def _ready(self, host: Batch, moved: Batch, event: torch.cuda.Event) -> tuple[Batch, Batch]:
        """The compute stream waits for the copies; the copies' memory is kept for it until its
        work is done (the caching allocator would otherwise hand it to the side stream again)."""
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        for tensor in (moved.sparse.lengths(), moved.dense, moved.labels, moved.targets):
            if tensor is not None:
                tensor.record_stream(compute)
        return host, moved
