"""`ModelRegistry`: versions of one model in a local directory (the embedded default).

Layout: `root/full/v<version>/` (a `Snapshot`), `root/delta/v<version>/` (a `Delta` from an
earlier version), and `root/PINNED` (JSON, optional): the full version an operator promoted or
rolled back to; without it servers follow the newest version. Each version directory is published
atomically and verified against its manifest when read (`freshrec.snapshot.files`). Versions are
integers that only grow; a full snapshot may share its version with the delta that led to it (the
same state twice: servers following deltas need not load it, new servers start from it). The
registry keeps the newest `keep` full snapshots and the deltas after the oldest one it keeps.

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
from freshrec.snapshot.model import Delta, Snapshot, read_interactions

__all__ = ["ModelRegistry"]

FULL, DELTA, PINNED = "full", "delta", "PINNED"
_NAME = re.compile(r"^v(\d{12})$")


class ModelRegistry:
    """Publish, list, load, pin and prune the versions under `root`."""

    def __init__(self, root: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, not {keep}")
        self.root = Path(root)
        self.keep = keep

    @staticmethod
    def _name(version: int) -> str:
        return f"v{version:012d}"

    def _versions(self, kind: str) -> list[int]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))

    def full_versions(self) -> list[int]:
        return self._versions(FULL)

    def delta_versions(self) -> list[int]:
        return self._versions(DELTA)

    def latest_full(self) -> int | None:
        versions = self.full_versions()
        return versions[-1] if versions else None

    def latest(self) -> int | None:
        """The newest version of either kind."""
        versions = self.full_versions() + self.delta_versions()
        return max(versions) if versions else None

    def publish(self, version: Snapshot | Delta) -> Path:
        """Write a snapshot or delta atomically; a full snapshot also prunes old versions."""
        kind = FULL if isinstance(version, Snapshot) else DELTA
        latest = self.latest()
        same_state = kind == FULL and version.version == latest and latest not in self.full_versions()
        if latest is not None and version.version <= latest and not same_state:
            raise ValueError(f"version {version.version} is not newer than the registry's {latest}")
        path = publish_dir(self.root / kind, self._name(version.version), version.save)
        if kind == FULL:
            self.prune()
        return path

    def path(self, kind: str, version: int) -> Path:
        return self.root / kind / self._name(version)

    def load_full(self, version: int) -> Snapshot:
        """The verified full snapshot `version` (`CorruptVersion` if it is torn or altered)."""
        path = self.path(FULL, version)
        verify_dir(path)
        return Snapshot.load(path)

    def load_delta(self, version: int) -> Delta:
        path = self.path(DELTA, version)
        verify_dir(path)
        return Delta.load(path)

    def interactions(self, kind: str, version: int) -> tuple[dict, pa.Table | None]:
        """(metadata, interactions) of the verified full ("full") or delta ("delta") `version`,
        without loading its model."""
        path = self.path(kind, version)
        verify_dir(path)
        return read_interactions(path, "snapshot" if kind == FULL else "delta")

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
        verify_dir(self.path(FULL, version))
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
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{PINNED}-{os.getpid()}"
        tmp.write_text(json.dumps(content))
        os.replace(tmp, self.root / PINNED)
        fsync_dir(self.root)

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
            for leftover in (self.root / kind).glob(f"{TMP_PREFIX}*"):
                if not leftover.name.endswith(f"-{os.getpid()}"):
                    shutil.rmtree(leftover, ignore_errors=True)
