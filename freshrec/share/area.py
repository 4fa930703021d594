"""`SharedArea`: the files one trainer shares its model through with the servers on its host.

An area is a directory on a memory file system, `$FRESHREC_SHM/freshrec-NAME` (`/dev/shm` unless
the variable names another): the processes map its files, so the tables live once in memory
whoever reads them. It holds

- `lock`: held (`flock`) by the trainer that writes the area; the kernel drops it when that
  process dies, however it dies, so a restarted trainer can take the area over;
- `manifest.json`: what to map, replaced whole (`os.replace`) at each change, so a reader sees one
  complete manifest: the generation, the model's card, each table's chunk count and index file,
  the dense block's layout;
- `gen-G/`: generation G's files (each trainer that takes the area over starts a new one; a
  server maps the new one and drops the old, whose files go when the last mapping does):
  `TABLE/rows.C`, `TABLE/seq.C` and one file per optimizer state array per chunk C, `TABLE/index.N`
  (the id index's slots, a new file at each resize), `dense` (see `freshrec.share.dense`).

>>> import tempfile
>>> area = SharedArea("demo", root=tempfile.mkdtemp())
>>> area.read_manifest() is None
True
>>> area.write_manifest({"generation": 1})
>>> area.read_manifest()["generation"], area.changed_since(None) is not None
(1, True)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["ROOT_ENV", "AreaBusy", "SharedArea"]

ROOT_ENV = "FRESHREC_SHM"
MANIFEST = "manifest.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AreaBusy(RuntimeError):
    """Another live trainer holds the area."""


class SharedArea:
    """The directory of share `name` under `root` (default: $FRESHREC_SHM or /dev/shm)."""

    def __init__(self, name: str, root: str | Path | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"share name {name!r}: letters, digits, '_', '.', '-' (up to 64, starting with "
                             "a letter or digit)")
        self.name = name
        self.path = Path(root or os.environ.get(ROOT_ENV) or "/dev/shm") / f"freshrec-{name}"
        self._lock: int | None = None

    # ------------------------------------------------------------------ the writer's side
    def take(self) -> None:
        """Become the area's one writer (creating it); `AreaBusy` names the live process that is."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AreaBusy(f"share {self.name!r} ({self.path}) is written by a live trainer (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd

    def release(self) -> None:
        """Stop being the writer (the files stay: servers keep serving them)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest in one step."""
        temporary = self.path / f".{MANIFEST}.{os.getpid()}"
        self.path.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(manifest))
        os.replace(temporary, self.path / MANIFEST)

    def create(self, relative: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A new zeroed file `relative` of `shape`, mapped for writing."""
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))
        return np.asarray(np.memmap(path, dtype=dtype, mode="r+", shape=shape))

    def chunk_allocator(self, prefix: str):
        """A `RowStorage.share` allocator: chunk C of array A in a new file `prefix/A.C` (the layout
        `freshrec.share.reader.MappedTable` maps)."""
        def allocate(array: str, chunk: int, rows: int, width: int, dtype: torch.dtype, device) -> torch.Tensor:
            kind = np.float32 if dtype == torch.float32 else np.int64
            return torch.from_numpy(self.create(f"{prefix}/{array}.{chunk}", (rows, width), kind))
        return allocate

    def remove(self, relative: str) -> None:
        """Delete a file or directory of the area (mappings of it stay valid)."""
        path = self.path / relative
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def generations(self) -> list[int]:
        return sorted(int(p.name[4:]) for p in self.path.glob("gen-*") if p.name[4:].isdigit())

    # ------------------------------------------------------------------ the readers' side
    def read_manifest(self) -> dict | None:
        """The current manifest (None before a trainer wrote one)."""
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return None

    def changed_since(self, seen: tuple[int, int] | None) -> tuple[int, int] | None:
        """The manifest's identity (inode, mtime) when it differs from `seen`, else None."""
        try:
            st = os.stat(self.path / MANIFEST)
        except FileNotFoundError:
            return None
        now = (st.st_ino, st.st_mtime_ns)
        return now if now != seen else None

    def open(self, relative: str, shape: tuple[int, ...] | None, dtype) -> np.ndarray:
        """File `relative` of `shape` (None: the whole file, flat), mapped read-only."""
        return np.asarray(np.memmap(self.path / relative, dtype=dtype, mode="r", shape=shape))
