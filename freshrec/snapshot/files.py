"""Atomic, verifiable version directories: write under a temporary name, record every file's size
and sha256 in `MANIFEST.json`, fsync, then rename into place. A reader checks the manifest, so a
torn, partial or edited directory is refused with a clear error instead of being half-loaded.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> path = publish_dir(root, "v1", lambda tmp: (tmp / "a.txt").write_text("hello"))
>>> path.name, verify_dir(path)
('v1', ['a.txt'])
>>> (path / "a.txt").write_text("HELLO")
5
>>> verify_dir(path)
Traceback (most recent call last):
...
freshrec.snapshot.files.CorruptVersion: ... a.txt: sha256 differs from MANIFEST.json (torn or edited)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from freshrec._durable import fsync_dir, fsync_file

__all__ = ["MANIFEST", "TMP_PREFIX", "CorruptVersion", "fsync_dir", "publish_dir", "verify_dir"]

MANIFEST = "MANIFEST.json"
TMP_PREFIX = ".tmp-"


class CorruptVersion(ValueError):
    """A version directory that is incomplete, torn or altered."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(root: Path, name: str, write: Callable[[Path], object]) -> Path:
    """Create `root/name` atomically: `write(tmp)` fills a temporary directory, then every file is
    hashed into the manifest, fsynced, and the directory renamed into place (and the rename fsynced).
    Refuses to replace an existing version."""
    root = Path(root)
    final = root / name
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable")
    tmp = root / f"{TMP_PREFIX}{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for path in [*files, tmp / MANIFEST]:
            fsync_file(path)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify_dir(path: Path) -> list[str]:
    """The file names listed in `path/MANIFEST.json`, after checking that each exists with its
    recorded size and sha256 and that nothing else is there. Raises `CorruptVersion` naming the
    first problem."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CorruptVersion(f"{path}: no {MANIFEST} (an unfinished or foreign directory)") from None
    except json.JSONDecodeError as error:
        raise CorruptVersion(f"{path}: {MANIFEST} is not valid JSON ({error})") from None
    present = {p.name for p in path.iterdir() if p.is_file()} - {MANIFEST}
    if extra := sorted(present - set(manifest)):
        raise CorruptVersion(f"{path}: files not in {MANIFEST}: {', '.join(extra)}")
    for name, expected in manifest.items():
        file = path / name
        if not file.is_file():
            raise CorruptVersion(f"{path}: {name} is missing")
        if file.stat().st_size != expected["bytes"]:
            raise CorruptVersion(f"{path}: {name} has {file.stat().st_size} bytes, "
                                 f"{MANIFEST} says {expected['bytes']} (torn or edited)")
        if _sha256(file) != expected["sha256"]:
            raise CorruptVersion(f"{path}: {name}: sha256 differs from {MANIFEST} (torn or edited)")
    return sorted(manifest)
