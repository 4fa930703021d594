"""`DenseBlock`: a model's dense parameters and buffers, with the trainer's progress, in one shared
block that readers copy whole.

Layout: a header of 8 int64 words - 0: a sequence counter (odd while the trainer writes), 1: the
version, 2: the events learned, 3: when the oldest event learned since the last write entered
(float64 bits, NaN when none), 4: when it was written (float64 bits) - then each tensor of the
model's `state_dict()` byte for byte, in order (`layout` says where). The trainer writes the block
after each chunk it learns (`write`); a reader copies it between two reads of the counter and keeps
the copy only when both saw the same even value (`read`), else it tries again; a block stuck odd
(its trainer died mid-write) is not read at all.

>>> import tempfile, torch
>>> from freshrec.share.area import SharedArea
>>> area = SharedArea("dense-demo", root=tempfile.mkdtemp())
>>> model = torch.nn.Linear(2, 1)
>>> block = DenseBlock.create(area, "gen-1/dense", model.state_dict())
>>> block.write(model.state_dict(), version=7, events=100, entered=12.5)
>>> copy = torch.nn.Linear(2, 1)
>>> header = DenseBlock.open(area, "gen-1/dense", block.layout).read(copy.state_dict())
>>> header.version, header.events, header.entered, torch.equal(copy.weight, model.weight)
(7, 100, 12.5, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import NamedTuple

import numba
import numpy as np
import torch

from freshrec.embedding.seqlock import read_row, write_begin, write_end

__all__ = ["DenseBlock", "Header"]

HEADER_WORDS = 8


class Header(NamedTuple):
    version: int
    events: int
    entered: float | None   # when the oldest event learned since the previous write entered
    written: float


@numba.njit(nogil=True, cache=True)
def _write(counter, body, payload):
    """`payload` into `body` between the two marks of the counter at address `counter[0]`."""
    write_begin(counter, 0, 0)
    for i in range(len(payload)):
        body[i] = payload[i]
    write_end(counter, 0, 0)


def _layout(tensors: Mapping[str, torch.Tensor]) -> list[list]:
    """[name, dtype, shape, byte offset in the payload] of each tensor."""
    layout, offset = [], 0
    for name, tensor in tensors.items():
        layout.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), offset])
        offset += tensor.numel() * tensor.element_size()
    return layout


def _bytes(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


class DenseBlock:
    """One mapped block (see the module docstring); `layout` comes from the manifest. Everything after
    the counter is one "row" of float32 words for `freshrec.embedding.seqlock` (the payload padded to
    whole words), written and read with the same sequence lock as a table's rows."""

    def __init__(self, block: np.ndarray, layout: list[list]) -> None:
        self.block, self.layout = block, layout
        self._counter = np.array([block.ctypes.data], np.int64)
        self._body = np.array([block.ctypes.data + 8], np.int64)
        self._words = (len(block) - 8) // 4

    @classmethod
    def create(cls, area, relative: str, tensors: Mapping[str, torch.Tensor]) -> DenseBlock:
        layout = _layout(tensors)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        return cls(area.create(relative, (HEADER_WORDS * 8 + -(-size // 4) * 4,), np.uint8), layout)

    @classmethod
    def open(cls, area, relative: str, layout: list[list]) -> DenseBlock:
        return cls(area.open(relative, None, np.uint8), layout)

    def write(self, tensors: Mapping[str, torch.Tensor], version: int, events: int, entered: float | None) -> None:
        """Publish the tensors (in `layout`'s order) with the trainer's progress."""
        header = np.array([0, version, events, 0, 0, 0, 0, 0], np.int64)
        header[3:5] = np.array([math.nan if entered is None else entered, time.time()], np.float64).view(np.int64)
        body = np.zeros(self._words * 4, np.uint8)
        parts = np.concatenate([header.view(np.uint8)[8:]] + [_bytes(t) for t in tensors.values()])
        body[: len(parts)] = parts
        _write(self._counter, self.block[8:].view(np.int32), body.view(np.int32))

    def read(self, tensors: Mapping[str, torch.Tensor] | None = None) -> Header | None:
        """The header, with the tensors (in `layout`'s order) copied in when given; None when the
        block holds nothing yet or stays mid-write (a dead trainer's)."""
        out = np.empty(self._words, np.float32)
        if not read_row(self._body, self._counter, 0, 0, self._words, out):
            return None
        body = out.view(np.uint8)
        words = body[: (HEADER_WORDS - 1) * 8].view(np.int64)   # the header after the counter
        if words[0] == 0:   # version 0: never written
            return None
        if tensors is not None:
            payload = body[(HEADER_WORDS - 1) * 8:]
            for (_, _, _, offset), tensor in zip(self.layout, tensors.values(), strict=True):
                target = _bytes(tensor)
                target[:] = payload[offset: offset + len(target)]
        floats = words[2:4].view(np.float64)
        entered = None if math.isnan(floats[0]) else float(floats[0])
        return Header(int(words[0]), int(words[1]), entered, float(floats[1]))
