"""`DynamicEmbedding`: a collisionless embedding table that grows as new ids arrive.

Each id (a positive int64 from `freshrec._hashing`) gets its own row once admitted
(`admission.py`); until then, and for ids never seen, its slot is -1, which reads as the zero row
and takes no update. Rows live in `RowStorage`, found through an `IdIndex`. Eviction frees rows
by event-time TTL and by capacity (least frequently or least recently used), and every change
is tagged with the version it goes into, so `delta_since(v)` gives what a replica at version v
lacks.

>>> from freshrec.embedding.optimizers import SGD
>>> table = DynamicEmbedding(TableConfig(dim=2, initializer="zeros", optimizer=SGD(lr=1.0)))
>>> slots = table.slots(np.array([42, 7, 42]), now=0.0)
>>> slots.tolist()                  # new ids get rows in order of first sight
[0, 1, 0]
>>> table.apply_gradients(slots, torch.ones(3, 2))          # 42's two gradients are summed
>>> table.gather(table.slots(np.array([42, 5]), now=1.0, train=False)).tolist()
[[-2.0, -2.0], [0.0, 0.0]]
>>> table.version, table.live
(1, 2)

One writer thread calls `slots(train=True)`, `apply_gradients`, `evict` and `apply_delta`; any
number of reader threads may call `slots(train=False)` and `gather` meanwhile (see `index.py`
for what they see). A reader may see a row half-way through an update, unless the table is shared
(`share`): readers in other processes (`attach`) see each row whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numba
import numpy as np
import torch

from freshrec.embedding.admission import (
    Admission,
    CountAdmission,
    ProbabilisticAdmission,
)
from freshrec.embedding.index import IdIndex, first_occurrences
from freshrec.embedding.optimizers import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    RowOptimizer,
    SlotCoalescer,
)
from freshrec.embedding.storage import INITIALIZERS, RowStorage

__all__ = ["DTYPES", "DynamicEmbedding", "TableConfig", "TableDelta"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_OPTIONS = {"dtype": tuple(DTYPES), "initializer": INITIALIZERS, "admission": ("count", "probability"),
            "eviction": ("lfu", "lru")}


@dataclass(frozen=True)
class TableConfig:
    """Everything that defines a table. `ttl_seconds` is in event time; `capacity` is enforced
    by `evict`; `admit_after` counts sightings in a count-min sketch of `sketch_width` x
    `sketch_depth` counters (admission="count"), or `admit_probability` of ids are admitted
    (admission="probability")."""

    dim: int = 16
    dtype: str = "float32"
    initializer: str = "normal"
    init_std: float = 0.01
    seed: int = 0
    chunk_rows: int = 1 << 16
    admit_after: int = 1
    admission: str = "count"
    admit_probability: float = 1.0
    sketch_width: int = 1 << 20
    sketch_depth: int = 4
    ttl_seconds: float | None = None
    capacity: int | None = None
    eviction: str = "lfu"
    optimizer: SGD | Adagrad | Adam | FTRL = field(default_factory=Adagrad)
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, valid in _OPTIONS.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, not {getattr(self, name)!r}")
        if self.dim < 1 or self.chunk_rows < 1 or self.admit_after < 1:
            raise ValueError(f"dim, chunk_rows and admit_after must be >= 1: {self}")
        if not 0.0 <= self.admit_probability <= 1.0:
            raise ValueError(f"admit_probability must be in [0, 1], not {self.admit_probability}")
        if self.capacity is not None and self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {self.capacity}")


@dataclass
class InPlaceSteps:
    """What `DynamicEmbedding.in_place_steps` hands a fused kernel."""

    dirty: np.ndarray
    version: int
    steps: int = 0


@dataclass(frozen=True)
class TableDelta:
    """What changed between versions `since` and `version`: the live rows written since (their
    ids, values, optimizer state and bookkeeping) and the ids deleted since. `state` is empty in a
    delta for servers (`delta_since(..., optimizer_state=False)`): they score, they do not train."""

    since: int
    version: int
    ids: np.ndarray
    rows: np.ndarray
    state: dict[str, np.ndarray]
    counts: np.ndarray
    last_seen: np.ndarray
    deleted: np.ndarray


@numba.njit(nogil=True, cache=True)
def _touch(rows, counts, last_seen, dirty, now, version):
    """Count a sighting of each row, note its time and mark it changed at `version` (never lowering
    a mark: a writer in another thread may have marked it later)."""
    for r in rows:
        if r >= 0:
            if counts[r] < np.uint32(0xFFFFFFFF):
                counts[r] += np.uint32(1)
            last_seen[r] = max(last_seen[r], now)
            dirty[r] = max(dirty[r], version)


class _Book:
    """Per-row bookkeeping beside the storage: owner id (0 when free), sightings, last event
    time seen and the version of the last write. 28 bytes a row; grows geometrically."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.uint32)
        self.last_seen = np.zeros(0, np.float64)
        self.dirty = np.zeros(0, np.int64)
        self.lock = threading.Lock()

    def ensure(self, rows: int) -> None:
        """Room for `rows` rows; growing replaces the arrays under `lock` (a writer of `dirty` in
        another thread holds it too, so no write lands in a replaced array)."""
        if rows <= len(self.ids):
            return
        with self.lock:
            size = max(rows, len(self.ids) * 3 // 2)
            for name in ("ids", "counts", "last_seen", "dirty"):
                old = getattr(self, name)
                grown = np.zeros(size, old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.counts.nbytes + self.last_seen.nbytes + self.dirty.nbytes


class _State:
    """A table's mutable parts, built on first use (a reader's: around mapped `storage` and `index`)."""

    def __init__(self, config: TableConfig, storage: RowStorage | None = None, index: IdIndex | None = None) -> None:
        self.optimizer: RowOptimizer = config.optimizer.build()
        self.index = IdIndex() if index is None else index
        self.storage = storage if storage is not None else RowStorage(
            config.dim, self.optimizer.state_widths(config.dim), self.optimizer.initial_state(config.dim),
            dtype=DTYPES[config.dtype], chunk_rows=config.chunk_rows, initializer=config.initializer,
            init_std=config.init_std, seed=config.seed, device=config.device)
        self.admission = _admission(config)
        self.book = _Book()
        self.coalescer = SlotCoalescer()
        self.deleted: list[tuple[int, np.ndarray]] = []
        self.version = self.admitted = self.evicted = 0


def _admission(config: TableConfig) -> Admission | None:
    if config.admission == "probability":
        return ProbabilisticAdmission(config.admit_probability, config.seed)
    if config.admit_after > 1:
        return CountAdmission(config.admit_after, config.sketch_width, config.sketch_depth, config.seed)
    return None


class DynamicEmbedding:
    """An id -> row embedding table with admission, eviction, row-wise optimizer and deltas."""

    def __init__(self, config: TableConfig) -> None:
        self.config = config
        self._built: _State | None = None

    @property
    def _s(self) -> _State:
        if self._built is None:
            self._built = _State(self.config)
        return self._built

    @property
    def version(self) -> int:
        """Updates applied so far (each `apply_gradients` adds one)."""
        return self._s.version

    @property
    def admitted(self) -> int:
        return self._s.admitted

    @property
    def evicted(self) -> int:
        return self._s.evicted

    @property
    def live(self) -> int:
        return len(self._s.index)

    @property
    def storage(self) -> RowStorage:
        """The row storage, for fused kernels that read rows where they lie (read only)."""
        return self._s.storage

    @property
    def row_optimizer(self) -> RowOptimizer:
        """The built row-wise optimizer, for fused kernels that call its kernel themselves."""
        return self._s.optimizer

    @property
    def index_bits(self) -> int:
        """log2 of the hash index's slots."""
        return self._s.index.state.bits

    @property
    def index_capacity(self) -> int:
        """Slots in the hash index (it doubles when the load would pass 0.6)."""
        return self._s.index.capacity

    @property
    def nbytes(self) -> int:
        """Bytes held by rows, state, index, bookkeeping, gradient buffers and the admission sketch."""
        s = self._s
        sketch = sum(a.nbytes for a in s.admission.state_dict().values()) if s.admission else 0
        return s.storage.nbytes + s.index.nbytes + s.book.nbytes + s.coalescer.nbytes + sketch

    def slots(self, ids: np.ndarray, now: float, train: bool = True) -> np.ndarray:
        """The row slot of each id, -1 for ids without a row.

        `train=True` (the writer) counts the ids, gives admitted new ids a row and records each
        row's sightings and last event time `now`; `train=False` only looks up.
        """
        s = self._s
        ids = np.ascontiguousarray(ids, np.int64)
        rows = s.index.lookup(ids)
        if not train:
            return rows
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            candidates = ids[missing]  # an id <= 0 is never in the index, so it is among these
            if candidates.min() <= 0:
                raise ValueError("ids must be positive int64 (see freshrec._hashing)")
            if s.admission is not None:
                admit = s.admission.admit(candidates)
                missing, candidates = missing[admit], candidates[admit]
            if len(candidates):
                new_ids, inverse = first_occurrences(candidates)
                rows[missing] = self._allocate(new_ids, now, initialize=True)[inverse]
        _touch(rows, s.book.counts, s.book.last_seen, s.book.dirty, float(now), s.version + 1)
        return rows

    def _allocate(self, ids: np.ndarray, now: float, initialize: bool) -> np.ndarray:
        """Rows for new ids, written before the index publishes them (readers never see a row
        that is not ready)."""
        s = self._s
        rows = s.storage.allocate(len(ids), initialize)
        s.book.ensure(s.storage.high)
        s.book.ids[rows] = ids
        s.book.counts[rows] = 0
        s.book.last_seen[rows] = now
        s.book.dirty[rows] = s.version + 1
        s.index.insert(ids, rows)
        s.admitted += len(ids)
        return rows

    def write(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Set the rows of `ids` to `values` [len(ids), dim]: ids without a row get one (its optimizer
        state fresh), the others keep their optimizer state and bookkeeping (a model taking rows
        learned elsewhere, e.g. a federated client adopting the global item rows)."""
        s = self._s
        ids = np.ascontiguousarray(ids, np.int64)
        rows = s.index.lookup(ids)
        if (new := rows < 0).any():
            rows[new] = self._allocate(ids[new], 0.0, initialize=True)
        s.storage.scatter(rows, np.ascontiguousarray(values, np.float32))
        s.book.dirty[rows] = s.version + 1

    def gather(self, slots: np.ndarray) -> torch.Tensor:
        """float32 [len(slots), dim] on the table's device; slot -1 reads as zeros."""
        return self._s.storage.gather(slots)

    def apply_gradients(self, slots: np.ndarray, grads: torch.Tensor, unique: bool = False,
                        events: int = 1) -> None:
        """One optimizer step on the rows of `slots` (-1 dropped, repeats summed); version + 1.
        `unique=True` promises distinct non-negative slots (a fused kernel summed them already),
        which skips the coalescing. `events`: how many events the gradients average (a per-event
        optimizer, `Adagrad`, takes them times that).

        Host float32 rows and state are updated where they lie; others (a GPU's, 16-bit rows) are
        summed, gathered, stepped and scattered back on their device, with torch ops."""
        s = self._s
        if s.storage.addresses() is None:
            rows = self._step_tensors(slots, grads, unique, events)
        else:
            grads = grads.detach().cpu().numpy()
            if unique:
                rows, summed = np.ascontiguousarray(slots, np.int64), np.ascontiguousarray(grads, np.float32)
            else:
                rows, summed = s.coalescer(slots, grads, s.storage.high)
            if s.optimizer.per_event and events != 1:
                summed = summed * np.float32(events)
            s.optimizer.step_at(s.storage.addresses(), s.storage.chunk_rows, rows, summed)
        with s.book.lock:  # a lookahead thread may be growing the book
            s.book.dirty[rows] = s.version + 1
        s.version += 1

    def _step_tensors(self, slots: np.ndarray, grads: torch.Tensor, unique: bool, events: int) -> np.ndarray:
        """`apply_gradients` where the rows lie in torch tensors: returns the rows stepped."""
        s = self._s
        device = s.storage.device
        at = torch.from_numpy(np.ascontiguousarray(slots, np.int64)).to(device, non_blocking=True)
        grads = grads.detach().to(device, torch.float32)
        if unique:
            rows, summed = at, grads
        else:
            keep = at >= 0
            rows, inverse = torch.unique(at[keep], return_inverse=True)
            summed = torch.zeros(len(rows), grads.shape[1], device=device).index_add_(0, inverse, grads[keep])
        if s.optimizer.per_event and events != 1:
            summed = summed * float(events)
        values = s.storage.gather(rows)
        state = {name: s.storage.gather(rows, name) for name in s.storage.state_names}
        s.optimizer.step_tensors(values, state, summed)
        s.storage.scatter(rows, values)
        for name, array in state.items():
            s.storage.scatter(rows, array, name)
        return rows.cpu().numpy()

    def place(self, device: torch.device | str) -> None:
        """Keep the rows and their optimizer state on `device` from now on (moved if they exist);
        the id index and the bookkeeping stay on the host."""
        device = torch.device(device)
        self.config = replace(self.config, device=str(device))
        if self._built is not None:
            self._built.storage.to(device)

    def reseed(self, seed: int) -> None:
        """Draw the rows of new ids from a generator seeded with `seed` from now on (a shard of a
        table sharded over ranks draws its own stream; the config keeps its seed, the generator's
        state is saved with the table's, `resume_state`)."""
        self._s.storage.generator.manual_seed(seed)

    def share(self, allocate_rows, allocate_index, changed) -> None:
        """Keep the rows, their state and the id index in memory other processes map (see
        `RowStorage.share`, `IdIndex.share`; `freshrec.share` passes the allocators); `changed()`
        after each growth or resize, before the new rows or slots are used."""
        s = self._s
        s.storage.share(allocate_rows, grown=changed)
        s.index.share(allocate_index, resized=changed)

    def attach(self, storage: RowStorage, index: IdIndex) -> None:
        """Read rows another process writes: `storage` (a `RowStorage.reader`) and `index` (its slots
        mapped) replace this table's; only `slots(train=False)` and `gather` are for such a table."""
        self._built = _State(self.config, storage, index)

    @contextmanager
    def in_place_steps(self) -> Iterator[InPlaceSteps]:
        """For a fused kernel that steps rows in place with `row_optimizer`'s kernel: holds the book
        (a lookahead thread that must grow it waits) and gives its `dirty` array, where the kernel
        raises each row it steps to the version after that step (`version` + steps so far); the
        steps it reports (`steps`) are added to the version at the end."""
        s = self._s
        with s.book.lock:
            place = InPlaceSteps(s.book.dirty, s.version)
            yield place
        s.version += place.steps

    def evict(self, now: float) -> int:
        """Free the rows not seen for `ttl_seconds` before `now`, then the least valuable rows
        beyond `capacity` (fewest sightings for "lfu", oldest for "lru"; ties to the older, then
        the smaller id). Returns how many rows were freed."""
        s, ttl, capacity = self._s, self.config.ttl_seconds, self.config.capacity
        live = np.flatnonzero(s.book.ids[: s.storage.high])
        doomed = []
        if ttl is not None:
            old = s.book.last_seen[live] < now - ttl
            doomed.append(live[old])
            live = live[~old]
        if capacity is not None and len(live) > capacity:
            doomed.append(self._least_valuable(live, len(live) - capacity))
        rows = np.sort(np.concatenate(doomed)) if doomed else np.zeros(0, np.int64)
        self._release(rows)
        return len(rows)

    def _least_valuable(self, live: np.ndarray, k: int) -> np.ndarray:
        book = self._s.book
        primary = (book.counts if self.config.eviction == "lfu" else book.last_seen)[live]
        candidates = live[primary <= np.partition(primary, k - 1)[k - 1]]
        keys = (book.ids[candidates], book.last_seen[candidates])
        if self.config.eviction == "lfu":
            keys += (book.counts[candidates],)
        return candidates[np.lexsort(keys)[:k]]

    def _release(self, rows: np.ndarray) -> None:
        """Unpublish the rows' ids first, then free the rows; log the ids for deltas."""
        s = self._s
        ids = s.book.ids[rows]
        s.index.delete(ids)
        s.storage.release(rows)
        s.book.ids[rows] = 0
        if len(ids):
            s.deleted.append((s.version + 1, ids))
        s.evicted += len(ids)

    def delta_since(self, version: int, optimizer_state: bool = True) -> TableDelta:
        """The live rows written and the ids deleted after `version` (changes made since the last
        `apply_gradients` are included, so nothing falls between two deltas); without
        `optimizer_state`, the rows' optimizer state stays out (a delta for servers)."""
        s = self._s
        high = s.storage.high
        rows = np.flatnonzero((s.book.ids[:high] != 0) & (s.book.dirty[:high] > version))
        deleted = [ids for tag, ids in s.deleted if tag > version]
        return TableDelta(version, s.version, **self._export(rows, optimizer_state),
                          deleted=np.concatenate(deleted) if deleted else np.zeros(0, np.int64))

    def _export(self, rows: np.ndarray, optimizer_state: bool = True) -> dict:
        s = self._s
        names = s.storage.state_names if optimizer_state else ()
        return {"ids": s.book.ids[rows], "rows": s.storage.gather(rows).cpu().numpy(),
                "state": {name: s.storage.gather(rows, name).cpu().numpy() for name in names},
                "counts": s.book.counts[rows], "last_seen": s.book.last_seen[rows]}

    def apply_delta(self, delta: TableDelta) -> None:
        """Bring this table (a replica at a version >= `delta.since`) to `delta.version` (a delta
        without optimizer state leaves the rows' state as it was: a server's replica)."""
        s = self._s
        if not delta.since <= s.version <= delta.version:
            raise ValueError(f"a delta from version {delta.since} to {delta.version} does not apply "
                             f"to a table at version {s.version}")
        gone = s.index.lookup(delta.deleted)
        self._release(np.sort(gone[gone >= 0]))
        s.version = delta.version
        self._upsert(delta.ids, delta.rows, delta.state, delta.counts, delta.last_seen)

    def _upsert(self, ids: np.ndarray, values: np.ndarray, state: dict[str, np.ndarray],
                counts: np.ndarray, last_seen: np.ndarray) -> None:
        s = self._s
        rows = s.index.lookup(ids)
        new = rows < 0
        if new.any():
            rows[new] = self._allocate(ids[new], 0.0, initialize=False)
        s.storage.scatter(rows, values)
        for name, values in state.items():
            s.storage.scatter(rows, values, name)
        s.book.counts[rows] = counts
        s.book.last_seen[rows] = last_seen
        s.book.dirty[rows] = s.version

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly: the live rows with their state and bookkeeping,
        the admission sketch, the initializer's generator and the counters (copies: the table may go on)."""
        s = self._s
        rows = np.flatnonzero(s.book.ids[: s.storage.high])
        export = self._export(rows)
        out = {name: export[name] for name in ("ids", "rows", "counts", "last_seen")}
        out.update({f"state.{name}": array for name, array in export["state"].items()})
        return {**out, **self.resume_state()}

    def resume_state(self) -> dict[str, np.ndarray]:
        """What `state_dict` holds beside the rows: the admission sketch, the initializer's generator
        and the counters (copies). A table at a delta's `since`, given the delta and this, continues exactly
        (incremental checkpoints)."""
        s = self._s
        admission = s.admission.state_dict() if s.admission else {}
        return {**{f"admission.{k}": v for k, v in admission.items()},
                "generator": s.storage.generator.get_state().numpy(),
                "counters": np.array([s.version, s.admitted, s.evicted], np.int64)}

    def load_resume_state(self, state: dict[str, np.ndarray]) -> None:
        """Set what `resume_state` returned (after the rows are in place)."""
        s = self._s
        s.version, s.admitted, s.evicted = (int(x) for x in state["counters"])
        if s.admission is not None:
            s.admission.load_state_dict({k.removeprefix("admission."): v for k, v in state.items()
                                         if k.startswith("admission.")})
        s.storage.generator.set_state(torch.from_numpy(state["generator"].copy()))

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Fill an empty table from `state_dict()` (of a table with the same config)."""
        s = self._s
        if s.admitted:
            raise ValueError("load_state_dict fills an empty table")
        names = s.storage.state_names
        s.version = int(state["counters"][0])
        self._upsert(state["ids"], state["rows"], {n: state[f"state.{n}"] for n in names},
                     state["counts"], state["last_seen"])
        self.load_resume_state(state)
