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

import numba
import numpy as np
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


@numba.njit(nogil=True, cache=True)
def _part_major(values, lengths, starts, out_values, out_lengths):
    """Reorder key-major ids (`lengths` is keys x rows) into row groups (group p: rows `starts[p]`
    to `starts[p + 1]`), each key-major; returns the ids per group."""
    keys, rows = lengths.shape
    src, part_ids = np.empty(keys, np.int64), np.zeros(len(starts) - 1, np.int64)
    if keys:
        src[1:] = np.cumsum(lengths.sum(axis=1))[:-1]
        src[0] = 0
    dst, at = 0, 0
    for p in range(len(part_ids)):
        for k in range(keys):
            n = 0
            for r in range(starts[p], starts[p + 1]):
                n += lengths[k, r]
                out_lengths[at] = lengths[k, r]
                at += 1
            out_values[dst: dst + n] = values[src[k]: src[k] + n]
            src[k] += n
            dst += n
            part_ids[p] += n
    return part_ids


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, dim=0, out=out[1:])
    return out


class SparseFeatures:
    """Ids of many keys over one batch, KeyedJaggedTensor style (int64 values, int32 lengths).

    `check=False` skips the consistency checks, for parts made by `split` from a checked whole.
    """

    def __init__(self, keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor,
                 check: bool = True) -> None:
        self._keys = list(keys)
        self._values = values
        self._lengths = lengths
        if check:
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
        """Every key's ids, cut out in one pass."""
        if not self._keys:
            return {}
        lengths = self._lengths.view(len(self._keys), -1)
        values = torch.split(self._values, lengths.sum(dim=1).tolist())
        return {key: JaggedTensor(values[k], lengths[k]) for k, key in enumerate(self._keys)}

    def split(self, size: int | Sequence[int]) -> list[SparseFeatures]:
        """Consecutive row groups of `size` rows (the last may hold fewer), or of the sizes listed
        (as `torch.split`), reordered in one numba pass over the ids.

        >>> sf = SparseFeatures(["a", "b"], torch.tensor([1, 2, 3, 4, 5, 6]),
        ...                     torch.tensor([1, 1, 1, 0, 2, 1], dtype=torch.int32))
        >>> [(part["a"].to_list(), part["b"].to_list()) for part in sf.split(2)]
        [([[1], [2]], [[], [4, 5]]), ([[3]], [[6]])]
        >>> [part["b"].to_list() for part in sf.split([1, 2])]
        [[[]], [[4, 5], [6]]]
        """
        keys, rows = len(self._keys), self.stride()
        part_rows = [min(size, rows - start) for start in range(0, rows, size)] if isinstance(size, int) else list(size)
        if sum(part_rows) != rows:
            raise ValueError(f"parts of {sum(part_rows)} rows for {rows} rows")
        starts = np.concatenate([[0], np.cumsum(part_rows, dtype=np.int64)])
        values, lengths = self._values.cpu().numpy(), self._lengths.cpu().numpy()
        out_values, out_lengths = np.empty_like(values), np.empty_like(lengths)
        part_ids = _part_major(values, lengths.reshape(keys, rows), starts, out_values, out_lengths)
        device = self._values.device
        return [SparseFeatures(self._keys, part_values, part_lengths, check=False)
                for part_values, part_lengths in zip(
                    torch.from_numpy(out_values).to(device).split(part_ids.tolist()),
                    torch.from_numpy(out_lengths).to(device).split([keys * n for n in part_rows]))]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseFeatures:
        return SparseFeatures(self._keys, self._values.to(device, non_blocking=non_blocking),
                              self._lengths.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SparseFeatures:
        """Page-locked copy for fast host-to-device transfer; unchanged where no accelerator exists."""
        return SparseFeatures(self._keys, pin(self._values), pin(self._lengths))

    def __repr__(self) -> str:
        return f"SparseFeatures(keys={self._keys}, stride={self.stride()}, ids={self._values.numel()})"
