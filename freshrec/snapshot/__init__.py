"""Snapshots and deltas on disk, the `ModelRegistry` of versions, and the `ModelSwitcher` that
swaps the serving model atomically."""

from freshrec.snapshot.files import CorruptVersion, publish_dir, verify_dir
from freshrec.snapshot.model import (
           Delta,
           Snapshot,
           model_card,
           model_from_card,
           table_versions,
)
from freshrec.snapshot.registry import ModelRegistry
from freshrec.snapshot.switcher import ModelSwitcher

__all__ = ["CorruptVersion", "Delta", "ModelRegistry", "ModelSwitcher", "Snapshot", "model_card",
           "model_from_card", "publish_dir", "table_versions", "verify_dir"]
