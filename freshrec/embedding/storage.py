"""`RowStorage`: embedding rows and per-row optimizer state in chunks that grow without copying.

Rows are numbered from 0; row `r` lives at `chunk[r // chunk_rows][r % chunk_rows]`. Growing
appends one chunk of `chunk_rows` rows to every array (the rows and each named state array), so
existing rows never move. Released rows go on a free list and are handed out again first, the
most recently released first. Each allocated row is set by the initializer (a seeded generator
drawn in allocation order, so the same calls give the same values) and its state is reset to
its initial value (0 unless `state_init` names another).

>>> storage = RowStorage(dim=4, state_widths={"accum": 4}, chunk_rows=2, initializer="zeros")
>>> rows = storage.allocate(3)                # fills one chunk and starts a second
>>> rows.tolist(), storage.chunks
([0, 1, 2], 2)
>>> storage.scatter(np.array([2]), torch.ones(1, 4))
>>> storage.gather(np.array([2, -1])).tolist()   # row -1 reads as zeros
[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
>>> storage.release(np.array([0]))
>>> storage.allocate(2).tolist()              # the free list first, then fresh rows
[0, 3]

Rows may live on another device (`device="cuda"`) or in float16/bfloat16; optimizer state is
float32, beside the rows (on the host for host rows, on the device for device rows). Host float32
arrays are read and written by numba kernels through each chunk's address (`row_view`;
`addresses()` lends them to optimizer kernels that update rows in place); other arrays by torch
indexing, one pass per chunk touched (device tables want large chunks). `gather` always returns
float32 on the storage's device; `to(device)` moves every array.

`share(allocate)` puts host float32 arrays into memory other processes map (`freshrec.share`) and
adds a sequence counter per row, so a reader there sees each row whole (`seqlock`); a `reader`
storage maps such chunks (`extend`) to gather them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np
import torch

from freshrec._words import AHEAD, f32_at, prefetch
from freshrec.embedding.seqlock import NO_SEQ, read_row, write_begin, write_end

__all__ = ["INITIALIZERS", "SEQ", "RowStorage", "locate", "prefetch_row", "row_view"]

INITIALIZERS = ("normal", "uniform", "zeros")
ROWS = "rows"
SEQ = "seq"   # the per-row sequence counters of a shared storage (`seqlock`)


@numba.njit(nogil=True, cache=True, inline="always")
def locate(chunk_rows, row):
    """(chunk, row within the chunk) of row `row` >= 0."""
    return row // chunk_rows, row % chunk_rows


@numba.njit(nogil=True, cache=True, inline="always")
def row_view(bases, chunk, row, width):
    """Row `row` of chunk `chunk` of a host float32 chunked array with chunk addresses `bases`,
    as a writable view of `width` values; for numba kernels that read or update rows in place."""
    return numba.carray(f32_at(bases[chunk] + row * width * 4), width)


@numba.njit(nogil=True, cache=True, inline="always")
def prefetch_row(bases, chunk, row, width):
    """`prefetch` a row (as `row_view` finds it): its first and its last byte, so a row that
    straddles two cache lines (up to 64 bytes wide: any; wider rows: their ends) has both."""
    start = bases[chunk] + row * width * 4
    prefetch(start)
    prefetch(start + width * 4 - 1)


@numba.njit(nogil=True, cache=True)
def _gather(bases, seq, chunk_rows, rows, out):
    """Rows `rows` into `out`; row -1, a row past the chunks mapped, or one that stays mid-write
    (see `seqlock`) reads as zeros."""
    width = out.shape[1]
    limit = len(bases) * chunk_rows
    for i in range(len(rows)):
        if i + AHEAD < len(rows) and 0 <= rows[i + AHEAD] < limit:
            c, r = locate(chunk_rows, rows[i + AHEAD])
            prefetch_row(bases, c, r, width)
        if rows[i] < 0 or rows[i] >= limit:
            out[i, :] = 0.0
            continue
        c, r = locate(chunk_rows, rows[i])
        if not read_row(bases, seq, c, r, width, out[i]):
            out[i, :] = 0.0


@numba.njit(nogil=True, cache=True)
def _scatter(bases, seq, chunk_rows, rows, values):
    width = values.shape[1]
    for i in range(len(rows)):
        c, r = locate(chunk_rows, rows[i])
        dst = row_view(bases, c, r, width)
        write_begin(seq, c, r)
        for j in range(width):
            dst[j] = values[i, j]
        write_end(seq, c, r)


def _zeros(chunk: int, rows: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The default chunk allocator: a zeroed tensor in this process's memory."""
    return torch.zeros(rows, width, dtype=dtype, device=device)


class _Chunked:
    """One array of [rows, width] in chunks, each from `allocate(chunk number, rows, width, dtype,
    device)`; `bases` (chunk addresses) is replaced, never mutated, so a reader thread that took it
    sees chunks that exist."""

    def __init__(self, width: int, dtype: torch.dtype, device: torch.device, allocate=_zeros) -> None:
        self.width, self.dtype, self.device, self.allocate = width, dtype, device, allocate
        self.chunks: list[torch.Tensor] = []
        self.bases = np.zeros(0, np.int64)
        self.fast = dtype == torch.float32 and device.type == "cpu"

    def grow(self, chunk_rows: int) -> None:
        self.append(self.allocate(len(self.chunks), chunk_rows, self.width, self.dtype, self.device))

    def append(self, chunk: torch.Tensor) -> None:
        self.chunks.append(chunk)
        self.bases = np.array([c.data_ptr() for c in self.chunks], np.int64)

    def to(self, device: torch.device) -> None:
        self.device = device
        self.chunks = [c.to(device) for c in self.chunks]
        self.bases = np.array([c.data_ptr() for c in self.chunks], np.int64)
        self.fast = self.dtype == torch.float32 and device.type == "cpu"

    def move(self, allocate) -> None:
        """Copy every chunk into one from `allocate`, which makes the chunks from now on."""
        self.allocate = allocate
        old, self.chunks = self.chunks, []
        for number, chunk in enumerate(old):
            self.append(allocate(number, len(chunk), self.width, self.dtype, self.device))
            self.chunks[-1].copy_(chunk)

    def gather(self, rows: np.ndarray | torch.Tensor, chunk_rows: int, seq: np.ndarray) -> torch.Tensor:
        if self.fast:
            rows = np.ascontiguousarray(rows, np.int64)
            out = np.empty((len(rows), self.width), np.float32)
            _gather(self.bases, seq, chunk_rows, rows, out)
            return torch.from_numpy(out)
        rows = _on(rows, self.device)
        if len(self.chunks) == 1:   # one indexing pass; row -1 reads as zeros
            out = self.chunks[0][rows.clamp(min=0)].float()
            return out.masked_fill_((rows < 0).unsqueeze(1), 0.0)
        out = torch.zeros(len(rows), self.width, device=self.device)
        for c, at, offset in _by_chunk(rows, chunk_rows):
            out[at] = self.chunks[c][offset].float()
        return out

    def scatter(self, rows: np.ndarray | torch.Tensor, values: torch.Tensor | np.ndarray, chunk_rows: int,
                seq: np.ndarray) -> None:
        if self.fast:
            _scatter(self.bases, seq, chunk_rows, np.ascontiguousarray(rows, np.int64),
                     np.ascontiguousarray(values, np.float32))
            return
        rows, values = _on(rows, self.device), torch.as_tensor(values).to(self.device, self.dtype)
        if len(self.chunks) == 1:
            self.chunks[0][rows] = values
            return
        for c, at, offset in _by_chunk(rows, chunk_rows):
            self.chunks[c][offset] = values[at]


def _on(rows: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Row numbers as an int64 tensor on `device`."""
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(np.ascontiguousarray(rows, np.int64))
    return rows.to(device, torch.int64, non_blocking=True)


def _by_chunk(rows: torch.Tensor, chunk_rows: int):
    """(chunk, positions in `rows`, offsets in the chunk) for each chunk that non-negative rows touch."""
    chunk, offset = torch.div(rows, chunk_rows, rounding_mode="floor"), rows % chunk_rows
    for c in torch.unique(chunk[rows >= 0]).tolist():
        at = torch.nonzero(chunk == c).squeeze(1)
        yield c, at, offset[at]


class RowStorage:
    """Rows of `dim` values plus named float32 state arrays ({name: width}), allocated by row.

    `initializer` is "normal" (std `init_std`), "uniform" (in [-init_std, init_std]) or "zeros";
    `seed` seeds the generator that draws new rows in allocation order.
    """

    def __init__(self, dim: int, state_widths: Mapping[str, int] | None = None,
                 state_init: Mapping[str, float] | None = None, *,
                 dtype: torch.dtype = torch.float32, chunk_rows: int = 1 << 16,
                 initializer: str = "normal", init_std: float = 0.01, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if initializer not in INITIALIZERS:
            raise ValueError(f"initializer must be one of {INITIALIZERS}, not {initializer!r}")
        self.dim, self.chunk_rows = dim, chunk_rows
        self.initializer, self.init_std = initializer, init_std
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.state_init = dict(state_init or {})
        self._arrays = {ROWS: _Chunked(dim, dtype, self.device)}
        for name, width in (state_widths or {}).items():
            self._arrays[name] = _Chunked(width, torch.float32, self.device)
        self._seq: _Chunked | None = None   # per-row counters, once shared
        self._grown = None
        self._next = 0
        self._free = np.zeros(0, np.int64)
        self._free_top = 0

    @classmethod
    def reader(cls, dim: int, chunk_rows: int) -> RowStorage:
        """An empty storage of rows another process writes, for `extend` to map its chunks into:
        `gather` and `addresses` only (no allocation, no state)."""
        storage = cls(dim, chunk_rows=chunk_rows, initializer="zeros")
        storage._seq = _Chunked(1, torch.int64, storage.device)
        return storage

    def extend(self, rows: torch.Tensor, seq: torch.Tensor) -> None:
        """Map one more chunk of a writer's rows [chunk_rows, dim] and their counters [chunk_rows, 1]
        (a `reader`'s)."""
        self._arrays[ROWS].append(rows)
        self._seq.append(seq)

    def share(self, allocate, grown=None) -> None:
        """Keep every array in chunks from `allocate(array name, chunk number, rows, width, dtype,
        device)` (memory other processes map: see `freshrec.share`) from now on, copying the chunks
        there are, with per-row counters (`seqlock`) that make each row update atomic to readers;
        `grown()` is called after each growth, before the new rows are handed out. Host float32
        storage only."""
        if self.addresses() is None:
            raise ValueError("only host float32 rows can be shared (embedding.row_dtype float32, gpu.device cpu)")
        for name, array in self._arrays.items():
            array.move(lambda chunk, rows, width, dtype, device, name=name: allocate(name, chunk, rows, width, dtype,
                                                                                     device))
        self._seq = _Chunked(1, torch.int64, self.device,
                             lambda chunk, rows, width, dtype, device: allocate(SEQ, chunk, rows, width, dtype, device))
        for _ in range(self.chunks):
            self._seq.grow(self.chunk_rows)
        self._grown = grown

    @property
    def shared(self) -> bool:
        return self._seq is not None

    def seq_bases(self) -> np.ndarray:
        """The chunk addresses of the per-row counters (empty unless shared)."""
        return NO_SEQ if self._seq is None else self._seq.bases

    @property
    def state_names(self) -> list[str]:
        return [name for name in self._arrays if name != ROWS]

    @property
    def chunks(self) -> int:
        return len(self._arrays[ROWS].chunks)

    @property
    def high(self) -> int:
        """One past the highest row ever allocated."""
        return self._next

    @property
    def free(self) -> int:
        return self._free_top

    @property
    def nbytes(self) -> int:
        return sum(c.element_size() * c.numel() for a in self._arrays.values() for c in a.chunks) + \
            self._free.nbytes

    def allocate(self, n: int, initialize: bool = True) -> np.ndarray:
        """n rows: from the free list (most recently released first), then new ones; initialized
        unless the caller is about to write them (`initialize=False`)."""
        reused = min(n, self._free_top)
        rows = np.empty(n, np.int64)
        rows[:reused] = self._free[self._free_top - reused: self._free_top][::-1]
        self._free_top -= reused
        fresh = n - reused
        while self._next + fresh > self.chunks * self.chunk_rows:
            if self._seq is not None:   # counters first: a reader that maps a chunk finds them
                self._seq.grow(self.chunk_rows)
            for array in self._arrays.values():
                array.grow(self.chunk_rows)
            if self._grown is not None:
                self._grown()
        rows[reused:] = np.arange(self._next, self._next + fresh)
        self._next += fresh
        if initialize:
            self._initialize(rows)
        return rows

    def _initialize(self, rows: np.ndarray) -> None:
        shape = (len(rows), self.dim)
        if self.initializer == "normal":
            values = torch.randn(shape, generator=self.generator) * self.init_std
        elif self.initializer == "uniform":
            values = (torch.rand(shape, generator=self.generator) * 2 - 1) * self.init_std
        else:
            values = torch.zeros(shape)
        self.scatter(rows, values)
        for name in self.state_names:
            initial = self.state_init.get(name, 0.0)
            self.scatter(rows, torch.full((len(rows), self._arrays[name].width), initial), name)

    def release(self, rows: np.ndarray) -> None:
        """Put rows on the free list (their values stay until they are allocated again)."""
        need = self._free_top + len(rows)
        if need > len(self._free):
            grown = np.empty(max(need, 2 * len(self._free)), np.int64)
            grown[: self._free_top] = self._free[: self._free_top]
            self._free = grown
        self._free[self._free_top: need] = rows
        self._free_top = need

    def addresses(self) -> dict[str, np.ndarray] | None:
        """The chunk addresses of every array ("rows" and each state, and "seq": the counters, empty
        unless shared), for numba kernels that update rows in place with `row_view` (inside
        `write_begin`/`write_end`); None unless all are host float32. Valid until the next
        `allocate`. Taken while another thread allocates (a lookahead admitting the next chunk's ids),
        it holds the chunks every array has, which hold every row allocated before the call."""
        if not all(array.fast for array in self._arrays.values()):
            return None
        bases = {name: array.bases for name, array in self._arrays.items()}   # each replaced whole by a grow
        chunks = min(len(b) for b in bases.values())   # an array may have grown already, another not yet
        seq = self.seq_bases()
        return {**{name: b[:chunks] for name, b in bases.items()}, SEQ: seq[:chunks] if len(seq) else seq}

    def to(self, device: torch.device | str) -> None:
        """Move every array (rows and state) to `device`; row numbers stay. Not for shared storage."""
        if self.shared and torch.device(device).type != "cpu":
            raise ValueError("shared rows stay on the host")
        self.device = torch.device(device)
        for array in self._arrays.values():
            array.to(self.device)

    def gather(self, rows: np.ndarray | torch.Tensor, name: str = ROWS) -> torch.Tensor:
        """float32 [len(rows), width] copy of `name` at `rows` (numpy, or a tensor of row numbers);
        row -1 gives zeros. Thread-safe; a row of shared storage is read whole (`seqlock`)."""
        return self._arrays[name].gather(rows, self.chunk_rows, self.seq_bases() if name == ROWS else NO_SEQ)

    def scatter(self, rows: np.ndarray | torch.Tensor, values: torch.Tensor | np.ndarray, name: str = ROWS) -> None:
        """Write `values` [len(rows), width] into `name` at `rows` (all allocated, no -1)."""
        self._arrays[name].scatter(rows, values, self.chunk_rows, self.seq_bases() if name == ROWS else NO_SEQ)
