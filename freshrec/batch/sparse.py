"""Jagged id features: `SparseFeatures` (KeyedJaggedTensor semantics) and `JaggedTensor`.

All keys' ids live in one int64 `values` tensor, key-major: every row of key 0, then every
row of key 1, and so on. `lengths` (int32, `len(keys) * stride`) says how many ids each
(key, row) holds; offsets are derived from lengths.

>>> import torch
>>> sf = SparseFeatures(["user", "genres"],
...                     torch.tensor([11, 12, 5, 6, 7]),   # user: 11, 12; genres: [5, 6], [7]
...                     torch.tensor([1, 1, 2, 1], dtype=torch.int32))
>>> sf.stride(), sf.length_per_key(), sf.offset_per_key()
(2, [2, 3], [0, 2, 5])
>>> sf["genres"].values.tolist(), sf["genres"].offsets.tolist()
([5, 6, 7], [0, 2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class JaggedTensor:
    """The ids of one key: `values` and per-row `lengths`; `offsets` has one more entry than rows."""

    values: torch.Tensor
    lengths: torch.Tensor

    @property
    def offsets(self) -> torch.Tensor:
        return _offsets(self.lengths)

    def to_list(self) -> list[list[int]]:
        """Per-row id lists (for inspection and tests)."""
        return [chunk.tolist() for chunk in torch.split(self.values, self.lengths.tolist())]


def pin(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor.pin_memory()` when an accelerator is present (pinning needs one), else `tensor`."""
    return tensor.pin_memory() if torch.accelerator.is_available() else tensor


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, dim=0, out=out[1:])
    return out


class SparseFeatures:
    """Ids of many keys over one batch, KeyedJaggedTensor style (int64 values, int32 lengths)."""

    def __init__(self, keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor) -> None:
        self._keys = list(keys)
        self._values = values
        self._lengths = lengths
        self._check()

    def _check(self) -> None:
        if self._values.dtype != torch.int64:
            raise TypeError(f"ids must be int64, got {self._values.dtype}")
        if self._keys and self._lengths.numel() % len(self._keys):
            raise ValueError(f"{self._lengths.numel()} lengths do not split into {len(self._keys)} keys")
        if int(self._lengths.sum()) != self._values.numel():
            raise ValueError(f"lengths sum to {int(self._lengths.sum())} but there are "
                             f"{self._values.numel()} values")

    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> torch.Tensor:
        return self._values

    def lengths(self) -> torch.Tensor:
        return self._lengths

    def offsets(self) -> torch.Tensor:
        return _offsets(self._lengths)

    def stride(self) -> int:
        """Rows in the batch."""
        return self._lengths.numel() // len(self._keys) if self._keys else 0

    def length_per_key(self) -> list[int]:
        return self._lengths.view(len(self._keys), -1).sum(dim=1).tolist() if self._keys else []

    def offset_per_key(self) -> list[int]:
        out = [0]
        for n in self.length_per_key():
            out.append(out[-1] + n)
        return out

    def __getitem__(self, key: str) -> JaggedTensor:
        k = self._keys.index(key)
        starts = self.offset_per_key()
        stride = self.stride()
        return JaggedTensor(self._values[starts[k]: starts[k + 1]],
                            self._lengths[k * stride: (k + 1) * stride])

    def to_dict(self) -> dict[str, JaggedTensor]:
        return {key: self[key] for key in self._keys}

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseFeatures:
        return SparseFeatures(self._keys, self._values.to(device, non_blocking=non_blocking),
                              self._lengths.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SparseFeatures:
        """Page-locked copy for fast host-to-device transfer; unchanged where no accelerator exists."""
        return SparseFeatures(self._keys, pin(self._values), pin(self._lengths))

    def __repr__(self) -> str:
        return f"SparseFeatures(keys={self._keys}, stride={self.stride()}, ids={self._values.numel()})"
