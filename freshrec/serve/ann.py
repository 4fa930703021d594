"""`ItemIndex`: approximate nearest neighbours (faiss, inner product) over item embeddings, updated while
requests search it.

Items are known by int64 keys (the caller maps its item ids to them, e.g. hashed; -1 is reserved: it pads
results), their vectors are float32 rows of width `dim`, and similarity is the inner product (L2-normalise the
vectors and queries for cosine). Two kinds (`IndexConfig.kind`):

- "flat": exact, every item scored per query;
- "ivf": an inverted file (`nlist` k-means lists, `nprobe` of them searched per query) trained on the items present
  once there are `train_after` of them; until then it serves exactly, from a flat index.

Updates are copy-on-write, like a model version: `update` and `remove` (one writer at a time) change a clone of the
current `IndexVersion`'s faiss index and publish it with one attribute assignment; `search` reads that attribute
once and searches the version it got, so a request never sees half an update and never takes a lock (faiss
releases the GIL while it searches).

>>> import numpy as np
>>> index = ItemIndex(dim=2)
>>> index.update(np.array([10, 11, 12]), np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], np.float32))
1
>>> query = np.array([1.0, 0.1], np.float32)
>>> index.search_one(query, k=2)
[10, 12]
>>> index.search_one(query, k=2, exclude={10})        # e.g. the items the user already consumed
[12, 11]
>>> index.update(np.array([11]), np.array([[2.0, 0.0]], np.float32))   # upsert: item 11 moves
2
>>> index.search_one(query, k=1), index.version, len(index)
([11], 2, 3)
"""

from __future__ import annotations

import json
import operator
import os
import threading
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import faiss
import numpy as np

__all__ = ["IndexConfig", "IndexVersion", "ItemIndex"]

KINDS = ("flat", "ivf")
MISSING = -1   # the key padding a result row with fewer than k items


@dataclass(frozen=True)
class IndexConfig:
    """- `kind`: "flat" (exact) or "ivf" (approximate);
    - `nlist`: the IVF's lists; `nprobe`: lists searched per query (more: better recall, slower; at most `nlist`);
    - `train_after`: items present when the IVF is trained (None: 39 per list, what faiss's k-means asks for);
    - `threads`: OpenMP threads per search (a server searches from many request threads: 1)."""

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    train_after: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("nlist", "nprobe", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_after is not None and self.train_after < self.nlist:
            raise ValueError(f"train_after ({self.train_after}) must be >= nlist ({self.nlist}): "
                             "k-means needs at least one item per list")

    @property
    def train_size(self) -> int:
        """Items present when the IVF is trained."""
        return 39 * self.nlist if self.train_after is None else self.train_after


@dataclass(frozen=True)
class IndexVersion:
    """One published state: its `number`, the faiss `index` (never changed once published), its `count` of items
    and the OpenMP `threads` a search uses. A reader holding it keeps getting the same answers."""

    number: int
    index: faiss.Index
    count: int
    threads: int = 1

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[Collection[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top `k` keys [q, k] and their scores [q, k] per query [q, dim], best first, leaving out
        `exclude[i]`'s keys for query i; a row with fewer than `k` items is padded with key -1, score -inf."""
        k = operator.index(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = _rows(queries, self.index.d, "queries")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} sets for {len(queries)} queries")
        extra = max((len(skip) for skip in exclude), default=0) if exclude is not None else 0
        asked = min(k + extra, self.count)   # enough for the top k to survive the exclusions
        if asked == 0:
            return np.full((len(queries), k), MISSING, np.int64), np.full((len(queries), k), -np.inf, np.float32)
        faiss.omp_set_num_threads(self.threads)   # OpenMP's setting is the calling thread's
        scores, keys = self.index.search(queries, asked)
        kept = keys != MISSING
        if extra:
            for row, skip in enumerate(exclude):
                if skip:
                    kept[row] &= ~np.isin(keys[row], np.fromiter(skip, np.int64, len(skip)))
            order = np.argsort(~kept, axis=1, kind="stable")   # the kept first, in their order
            keys, scores, kept = (np.take_along_axis(a, order, axis=1) for a in (keys, scores, kept))
        keys, scores, kept = keys[:, :k], scores[:, :k], kept[:, :k]
        keys, scores = np.where(kept, keys, MISSING), np.where(kept, scores, -np.inf).astype(np.float32)
        short = ((0, 0), (0, k - keys.shape[1]))   # fewer items than k
        return np.pad(keys, short, constant_values=MISSING), np.pad(scores, short, constant_values=-np.inf)


class ItemIndex:
    """Item embeddings searched by inner product, updated copy-on-write (see the module's docstring)."""

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or IndexConfig()
        self._current = IndexVersion(0, faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), 0, self.config.threads)
        self._writer = threading.Lock()

    @property
    def current(self) -> IndexVersion:
        """The version searched now: hold it to search one state across several calls."""
        return self._current

    @property
    def version(self) -> int:
        return self._current.number

    def __len__(self) -> int:
        return self._current.count

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[Collection[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The current version's top `k` keys and scores per query (see `IndexVersion.search`)."""
        return self._current.search(queries, k, exclude)

    def search_one(self, query: np.ndarray, k: int, exclude: Collection[int] = ()) -> list[int]:
        """Up to `k` keys for one query [dim], best first, none of `exclude`."""
        query = np.asarray(query)
        if query.ndim != 1:
            raise ValueError(f"query must be 1-D [{self.dim}], got shape {query.shape}")
        keys, _ = self.search(query[None], k, [exclude])
        return [key for key in keys[0].tolist() if key != MISSING]

    def update(self, keys: np.ndarray, vectors: np.ndarray) -> int:
        """Upsert items (keys [n], vectors [n, dim]): a known key's vector is replaced, a new key is added, the last
        vector wins for a key given twice. Returns the new version's number (the current one when `keys` is empty).
        The update that brings an "ivf" index to `train_after` items trains it (seconds, for thousands of lists)."""
        keys, vectors = self._checked(keys, vectors)
        with self._writer:
            if not len(keys):
                return self._current.number
            index = faiss.clone_index(self._current.index)
            index.remove_ids(keys)   # what IVF's update_vectors does, without its demand that every key be known
            index.add_with_ids(vectors, keys)
            return self._publish(self._maybe_trained(index))

    def replace(self, keys: np.ndarray, vectors: np.ndarray) -> int:
        """Publish a version holding exactly these items (keys [n], vectors [n, dim]; the last vector wins for a
        key given twice), built afresh rather than by changing a copy: cheaper when most vectors change (a new
        model version). A trained IVF keeps its lists. Returns the new version's number."""
        keys, vectors = self._checked(keys, vectors)
        with self._writer:
            current = self._current.index
            if isinstance(current, faiss.IndexIVF):
                index = faiss.clone_index(current)
                index.reset()
            else:
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            index.add_with_ids(vectors, keys)
            return self._publish(self._maybe_trained(index))

    def _checked(self, keys: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated keys and vectors, the last vector of a key given twice."""
        keys, vectors = _keys(keys), _rows(vectors, self.dim, "vectors")
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite (found NaN or inf)")
        last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
        return keys[last], vectors[last]

    def _maybe_trained(self, index: faiss.Index) -> faiss.Index:
        """An "ivf" index's flat stand-in, once it holds `train_after` items, as a trained IVF."""
        if self.config.kind == "ivf" and not isinstance(index, faiss.IndexIVF) \
                and index.ntotal >= self.config.train_size:
            return self._trained(index)
        return index

    def remove(self, keys: np.ndarray) -> int:
        """Remove items by key (unknown keys are ignored). Returns the new version's number (the current one when
        nothing was removed)."""
        keys = np.unique(_keys(keys))
        with self._writer:
            if not len(keys):
                return self._current.number
            index = faiss.clone_index(self._current.index)
            return self._publish(index) if index.remove_ids(keys) else self._current.number

    def _trained(self, flat: faiss.IndexIDMap2) -> faiss.IndexIVFFlat:
        """An IVF trained on, and holding, the flat index's items; its direct map (a hash table) lets items be
        replaced and removed by key."""
        vectors, keys = flat.index.reconstruct_n(0, flat.ntotal), faiss.vector_to_array(flat.id_map)
        ivf = faiss.index_factory(self.dim, f"IVF{self.config.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.nprobe = self.config.nprobe
        ivf.add_with_ids(vectors, keys)
        return ivf

    def _publish(self, index: faiss.Index) -> int:
        self._current = version = IndexVersion(self._current.number + 1, index, index.ntotal, self.config.threads)
        return version.number

    def save(self, path: str | os.PathLike) -> None:
        """Write the current version: the faiss index at `path`, the dim, config and version number at `path`.json
        (each written to a temporary name, then renamed over the old file)."""
        version, path = self._current, os.fspath(path)
        faiss.write_index(version.index, f"{path}.tmp")
        os.replace(f"{path}.tmp", path)
        with open(f"{path}.json.tmp", "w") as file:
            json.dump({"dim": self.dim, "version": version.number, "config": asdict(self.config)}, file)
        os.replace(f"{path}.json.tmp", f"{path}.json")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ItemIndex:
        """The index `save` wrote at `path`, at the version it saved."""
        path = os.fspath(path)
        with open(f"{path}.json") as file:
            meta = json.load(file)
        index = faiss.read_index(path)
        if index.d != meta["dim"]:
            raise ValueError(f"{path} holds {index.d}-dimensional vectors but {path}.json says {meta['dim']}")
        loaded = cls(meta["dim"], IndexConfig(**meta["config"]))
        loaded._current = IndexVersion(meta["version"], index, index.ntotal, loaded.config.threads)
        return loaded


def _rows(array: np.ndarray, dim: int, name: str) -> np.ndarray:
    """`array` as contiguous float32 [n, dim], or a clear error."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, {dim}], got shape {array.shape}")
    if array.shape[1] != dim:
        raise ValueError(f"{name} are {array.shape[1]} wide but the index holds {dim}-dimensional vectors")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _keys(keys: np.ndarray) -> np.ndarray:
    """`keys` as int64 [n], or a clear error."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64)
    if keys.ndim != 1:
        raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
    if keys.dtype == np.bool_ or not np.can_cast(keys.dtype, np.int64):
        raise TypeError(f"keys must be integers that fit in int64, got dtype {keys.dtype}")
    keys = keys.astype(np.int64, copy=False)
    if (keys == MISSING).any():
        raise ValueError(f"key {MISSING} is reserved: it pads results with fewer than k items")
    return keys
