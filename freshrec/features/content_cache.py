"""`ContentCache`: item embeddings on disk, keyed by a hash of the encoder's name and the item's content, so
re-running never re-encodes an unchanged item (an edited title gets a new vector; equal texts share one).

>>> import tempfile
>>> class Letters:  # a tiny text encoder: letter counts, unit norm
...     name, dim = "letters-v1", 26
...     def encode(self, texts):
...         x = np.array([[t.count(chr(97 + i)) for i in range(26)] for t in texts], np.float32) + 1e-3
...         return x / np.linalg.norm(x, axis=1, keepdims=True)
>>> folder = tempfile.mkdtemp()
>>> cache = ContentCache(folder, Letters())
>>> cache.embed(["1", "2", "3"], ["toy story", "heat", "toy story"]).shape, cache.misses, cache.hits
((3, 26), 2, 1)
>>> again = ContentCache(folder, Letters())  # a new process: reads the shard, encodes nothing
>>> again.embed(["2", "1"], ["heat", "toy story"]).shape, again.misses, again.hits
((2, 26), 0, 2)
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from freshrec._durable import fsync_dir, fsync_file
from freshrec.features.encoders import ContentEncoder

__all__ = ["ContentCache"]

HASH_BYTES = 16
SHARD = ".safetensors"


class ContentCache:
    """Embeddings of `encoder` under `directory/<encoder name>/`, in append-only safetensors shards
    (`hashes` uint8 `[n, 16]`, `vectors` float32 `[n, dim]`), read once on first use.

    `misses` counts the distinct contents encoded, `hits` every other row served (a repeat within one call
    included): `hits + misses` is the number of rows asked for."""

    def __init__(self, directory: str | Path, encoder: ContentEncoder) -> None:
        self.encoder = encoder
        self.folder = Path(directory) / re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)
        self.hits = self.misses = 0
        self._vectors: dict[bytes, np.ndarray] | None = None

    def embed(self, keys: Sequence[str], contents: Sequence[str]) -> np.ndarray:
        """float32 `[n, dim]` for texts; `keys` (item ids) name an item in errors."""
        self._check_lengths(keys, contents)
        for key, text in zip(keys, contents):
            if not isinstance(text, str):
                raise TypeError(f"content cache {self.encoder.name}: item {key}: content must be a str, "
                                f"got {type(text).__name__}")
        return self._embed([self._hash(text.encode()) for text in contents], contents)

    def embed_images(self, keys: Sequence[str], images: Sequence[np.ndarray]) -> np.ndarray:
        """float32 `[n, dim]` for images (arrays, hashed with their dtype and shape)."""
        self._check_lengths(keys, images)
        images = [np.ascontiguousarray(image) for image in images]
        return self._embed([self._hash(f"{i.dtype}{i.shape}".encode(), i.data) for i in images], images)

    def _check_lengths(self, keys: Sequence[str], contents: Sequence[object]) -> None:
        if len(keys) != len(contents):
            raise ValueError(f"content cache {self.encoder.name}: {len(keys)} keys but {len(contents)} contents")

    def _hash(self, *parts: bytes | memoryview) -> bytes:
        h = hashlib.sha256(self.encoder.name.encode() + b"\0")
        for part in parts:
            h.update(part)
        return h.digest()[:HASH_BYTES]

    def _embed(self, hashes: list[bytes], contents: Sequence[object]) -> np.ndarray:
        cached = self._load()
        todo = {h: c for h, c in zip(hashes, contents) if h not in cached}  # one per distinct content
        if todo:
            new = np.asarray(self.encoder.encode(list(todo.values())), dtype=np.float32)
            if new.shape != (len(todo), self.encoder.dim):
                raise ValueError(f"content cache {self.encoder.name}: the encoder returned {new.shape} for "
                                 f"{len(todo)} items, expected ({len(todo)}, {self.encoder.dim})")
            self._write(np.frombuffer(b"".join(todo), np.uint8).reshape(-1, HASH_BYTES), new)
            cached.update(zip(todo, new))
        self.misses += len(todo)
        self.hits += len(hashes) - len(todo)
        if not hashes:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.stack([cached[h] for h in hashes])

    def _load(self) -> dict[bytes, np.ndarray]:
        """Every shard's vectors by hash (temp files of an interrupted write are not shards: never read)."""
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.folder.glob(f"*{SHARD}")):
                tensors = load_file(shard)
                hashes, vectors = tensors["hashes"], tensors["vectors"]
                if vectors.ndim != 2 or vectors.shape[1] != self.encoder.dim or len(hashes) != len(vectors):
                    raise ValueError(f"content cache {self.encoder.name}: {shard} holds vectors {vectors.shape} "
                                     f"for {len(hashes)} hashes, the encoder's width is {self.encoder.dim}")
                self._vectors.update(zip(map(bytes, hashes), vectors))
        return self._vectors

    def _write(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        """A new shard, named by its hashes, written whole to a temp file and then renamed into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{hashlib.sha256(hashes.tobytes()).hexdigest()[:16]}{SHARD}"
        temp = self.folder / f"{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        save_file({"hashes": hashes, "vectors": np.ascontiguousarray(vectors)}, temp)
        fsync_file(temp)
        os.replace(temp, final)
        fsync_dir(self.folder)
