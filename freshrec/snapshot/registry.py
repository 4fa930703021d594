"""`ModelRegistry`: versions of one model in a local directory (the embedded default).

Layout: `root/full/v<version>/` (a `Snapshot`), `root/delta/v<version>/` (a `Delta` from an
earlier version), and `root/PINNED` (JSON, optional): the full version an operator promoted or
rolled back to; without it servers follow the newest version. `root/FULL_WANTED` (JSON, optional):
a server that refused a version (or found a gap in the deltas) asks the trainer for a full snapshot
at its next publish rather than at its next scheduled one. Each version directory is published
atomically and verified against its manifest when read (`freshrec.snapshot.files`). Versions are
integers that only grow; a full snapshot may share its version with the delta that led to it (the
same state twice: servers following deltas need not load it, new servers start from it). The
registry keeps the newest `keep` full snapshots and the deltas after the oldest one it keeps.

A worker group publishes each version in parts: rank r of a group of w writes
`root/parts/full/v<version>/part-<r>-of-<w>/` (or `parts/delta/...`), a snapshot or delta holding
its shard of every table (a handle made with `part=(r, w)` publishes so). A version in parts is
listed once all w parts are there, and loading it assembles the whole model's version from them
(`Snapshot.assemble`, `Delta.assemble`): a server holds the whole model, whoever wrote it.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> model = build_model("lr", [FeatureSpec("user_id", FieldKind.CATEGORICAL)])
>>> registry = ModelRegistry(tempfile.mkdtemp(), keep=2)
>>> for version in (1, 2, 3):
...     _ = registry.publish(Snapshot(model, version))
>>> registry.full_versions(), registry.latest_full()
([2, 3], 3)
>>> registry.rollback(), registry.target()          # pin the full version before the served one
(2, 2)
>>> registry.unpin(); registry.target()
3
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa

from freshrec.snapshot.files import TMP_PREFIX, fsync_dir, publish_dir, verify_dir
from freshrec.snapshot.model import Delta, Snapshot, merge_meta, read_interactions

__all__ = ["ModelRegistry"]

FULL, DELTA, PINNED, PARTS, FULL_WANTED = "full", "delta", "PINNED", "parts", "FULL_WANTED"
_NAME = re.compile(r"^v(\d{12})$")
_PART = re.compile(r"^part-(\d+)-of-(\d+)$")


def _part_name(rank: int, world: int) -> str:
    return f"part-{rank}-of-{world}"


def _complete_parts(directory: Path) -> list[Path] | None:
    """The parts of the version in `directory` in rank order when every part of it is there (all
    of one world size), else None (also when it is gone: pruned meanwhile)."""
    found = {}
    try:
        names = [path.name for path in directory.iterdir()]
    except FileNotFoundError:
        return None
    for name in names:
        if m := _PART.match(name):
            found[int(m.group(1))] = int(m.group(2))
    worlds = set(found.values())
    if len(worlds) != 1 or sorted(found) != list(range(next(iter(worlds)))):
        return None
    return [directory / _part_name(rank, found[rank]) for rank in sorted(found)]


class ModelRegistry:
    """Publish, list, load, pin and prune the versions under `root`; with `part` (rank, world),
    `publish` writes that rank's part of each version."""

    def __init__(self, root: str | os.PathLike[str], keep: int = 3, part: tuple[int, int] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, not {keep}")
        if part is not None and not 0 <= part[0] < part[1]:
            raise ValueError(f"part must be (rank, world) with 0 <= rank < world, not {part}")
        self.root = Path(root)
        self.keep = keep
        self.part = part
        self._assembled: dict[tuple[str, int], list[Path]] = {}   # complete versions in parts, found so far

    @staticmethod
    def _name(version: int) -> str:
        return f"v{version:012d}"

    @staticmethod
    def _numbered(folder: Path) -> dict[int, Path]:
        if not folder.is_dir():
            return {}
        return {int(m.group(1)): p for p in folder.iterdir() if (m := _NAME.match(p.name))}

    def _versions(self, kind: str, partial: bool = False) -> list[int]:
        """The versions of `kind`, whole or in parts (those in parts only once complete, unless `partial`)."""
        whole = self._numbered(self.root / kind)
        parted = self._numbered(self.root / PARTS / kind)
        for key in [k for k in self._assembled if k[0] == kind and k[1] not in parted]:
            del self._assembled[key]   # pruned
        complete = [v for v, path in parted.items() if partial or self._parts(kind, v, path) is not None]
        return sorted(set(whole) | set(complete))

    def _parts(self, kind: str, version: int, directory: Path | None = None) -> list[Path] | None:
        """The parts of `version` when it is complete (remembered once it is), else None."""
        key = (kind, version)
        if key not in self._assembled:
            parts = _complete_parts(directory or self.root / PARTS / kind / self._name(version))
            if parts is None:
                return None
            self._assembled[key] = parts
        return self._assembled[key]

    def full_versions(self) -> list[int]:
        return self._versions(FULL)

    def delta_versions(self) -> list[int]:
        return self._versions(DELTA)

    def latest_full(self) -> int | None:
        versions = self.full_versions()
        return versions[-1] if versions else None

    def latest(self, partial: bool = False) -> int | None:
        """The newest version of either kind (with `partial`, counting versions in parts not yet
        complete: a version a group is writing)."""
        versions = self._versions(FULL, partial) + self._versions(DELTA, partial)
        return max(versions) if versions else None

    def publish(self, version: Snapshot | Delta) -> Path:
        """Write a snapshot or delta atomically (this handle's part of it, with `part`); a full
        snapshot also prunes old versions."""
        kind = FULL if isinstance(version, Snapshot) else DELTA
        latest = self.latest()
        same_state = kind == FULL and version.version == latest and latest not in self.full_versions()
        if latest is not None and version.version <= latest and not same_state:
            raise ValueError(f"version {version.version} is not newer than the registry's {latest}")
        if self.part is None:
            path = publish_dir(self.root / kind, self._name(version.version), version.save)
        else:
            path = publish_dir(self.root / PARTS / kind / self._name(version.version), _part_name(*self.part),
                               version.save)
        if kind == FULL:
            self.prune()
        return path

    def path(self, kind: str, version: int) -> Path:
        """The directory of a whole version (one in parts has a directory per part: `_located`)."""
        return self.root / kind / self._name(version)

    def _located(self, kind: str, version: int, verify: bool) -> list[Path]:
        """The directory of `version` (whole), or of each of its parts, verified unless `verify` is
        False. FileNotFoundError when it is not there, or not complete."""
        whole = self.path(kind, version)
        paths = [whole] if whole.is_dir() else self._parts(kind, version)
        if not paths or not all(p.is_dir() for p in paths):
            raise FileNotFoundError(f"{self.root}: no complete {kind} version {version}")
        if verify:
            for path in paths:
                verify_dir(path)
        return paths

    def load_full(self, version: int, verify: bool = True) -> Snapshot:
        """The full snapshot `version`, verified first (`CorruptVersion` if it is torn or altered)
        unless `verify` is False (it was, by an earlier load); assembled from its parts if in parts."""
        return self._load(FULL, version, verify)

    def load_delta(self, version: int) -> Delta:
        """The verified delta `version` (assembled from its parts if in parts)."""
        return self._load(DELTA, version, True)

    def _load(self, kind: str, version: int, verify: bool) -> Snapshot | Delta:
        paths = self._located(kind, version, verify)
        loaded = Snapshot if kind == FULL else Delta
        return loaded.load(paths[0]) if paths[0] == self.path(kind, version) else loaded.assemble(paths)

    def interactions(self, kind: str, version: int) -> tuple[dict, pa.Table | None]:
        """(metadata, interactions) of the verified full ("full") or delta ("delta") `version`,
        without loading its model."""
        found = [read_interactions(path, "snapshot" if kind == FULL else "delta")
                 for path in self._located(kind, version, True)]
        present = [table for _, table in found if table is not None]
        return merge_meta([meta for meta, _ in found]), pa.concat_tables(present) if present else None

    def deltas_after(self, version: int) -> list[int]:
        """Delta versions newer than `version`, in order."""
        return [v for v in self.delta_versions() if v > version]

    def target(self) -> int | None:
        """The version servers should serve: the pinned full version, else the newest version."""
        pinned = self.pinned()
        return pinned if pinned is not None else self.latest()

    def pinned(self) -> int | None:
        try:
            return int(json.loads((self.root / PINNED).read_text())["version"])
        except FileNotFoundError:
            return None

    def promote(self, version: int) -> None:
        """Pin the full snapshot `version` (verified first): servers swap to it and stay there."""
        self._located(FULL, version, True)
        self._write_pin({"version": version})

    def rollback(self) -> int:
        """Pin the full snapshot before the one now targeted; returns it."""
        target = self.target()
        earlier = [v for v in self.full_versions() if target is None or v < target]
        if not earlier:
            raise LookupError(f"no full snapshot older than version {target} to roll back to")
        self.promote(earlier[-1])
        return earlier[-1]

    def unpin(self) -> None:
        """Follow the newest version again."""
        (self.root / PINNED).unlink(missing_ok=True)

    def _write_pin(self, content: dict) -> None:
        self._write_note(PINNED, content)

    def _write_note(self, name: str, content: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{name}-{os.getpid()}"
        tmp.write_text(json.dumps(content))
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def want_full(self, after: int, reason: str) -> None:
        """Ask the trainer for a full snapshot newer than `after` at its next publish (OSError when
        the registry cannot be written, e.g. mounted read-only on this server)."""
        self._write_note(FULL_WANTED, {"after": after, "reason": reason})

    def full_wanted(self) -> bool:
        """Whether a server asked for a full snapshot (`want_full`) since the last one."""
        return (self.root / FULL_WANTED).exists()

    def full_given(self) -> None:
        """A full snapshot was published: the request is answered."""
        (self.root / FULL_WANTED).unlink(missing_ok=True)

    def prune(self) -> None:
        """Keep the newest `keep` full snapshots (and a pinned one), and the deltas after the oldest
        kept; remove older versions and leftovers of interrupted publishes."""
        full = self.full_versions()
        kept = set(full[-self.keep:]) | ({self.pinned()} - {None})
        for version in full:
            if version not in kept:
                shutil.rmtree(self.path(FULL, version), ignore_errors=True)
        oldest = min(kept) if kept else 0
        for version in self.delta_versions():
            if version <= oldest:
                shutil.rmtree(self.path(DELTA, version), ignore_errors=True)
        for kind in (FULL, DELTA):
            for version, path in self._numbered(self.root / PARTS / kind).items():
                # pruned, or parts of a version never completed (every rank has written the newest full)
                if version <= oldest if kind == DELTA else version < max(kept, default=0) and version not in kept:
                    shutil.rmtree(path, ignore_errors=True)
            for leftover in (self.root / kind).glob(f"{TMP_PREFIX}*"):
                if not leftover.name.endswith(f"-{os.getpid()}"):
                    shutil.rmtree(leftover, ignore_errors=True)
