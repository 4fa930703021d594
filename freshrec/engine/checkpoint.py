"""Checkpoints for an exactly-once training effect: the trainer (model, tables, optimizer state,
random state), the joiner's state, the source position and the engine's own counters, written
together as one atomic, verified version directory (`freshrec.snapshot.files`). Restoring the
newest valid one and seeking the source to its position continues the run as if it had never
stopped.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
>>> trainer = OnlineTrainer(build_model("lr", [FeatureSpec("user_id", FieldKind.CATEGORICAL)]))
>>> for step in (1, 2, 3):
...     _ = store.save(Checkpoint(step, {"row": 100 * step}, trainer, {"events": 100 * step}))
>>> store.steps(), store.latest().position
([2, 3], {'row': 300})
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from safetensors.numpy import load_file, save_file

from freshrec.engine.trainer_state import load_trainer, save_trainer
from freshrec.events.source import Position
from freshrec.snapshot.files import CorruptVersion, publish_dir, verify_dir
from freshrec.train import OnlineTrainer

__all__ = ["Checkpoint", "CheckpointStore"]

log = logging.getLogger(__name__)
META, JOINER = "checkpoint.json", "joiner.safetensors"
_NAME = re.compile(r"^ckpt-(\d{12})$")


@dataclass
class Checkpoint:
    """Step `step`: `position` is the source position after the last event whose effect the
    trainer (and joiner) hold; `meta` is JSON (counters, log sequence, published version)."""

    step: int
    position: Position
    trainer: OnlineTrainer
    meta: dict[str, Any] = field(default_factory=dict)
    joiner: dict[str, np.ndarray | pa.Table] | None = None

    def save(self, directory: Path) -> None:
        save_trainer(self.trainer, directory)
        tables, text = [], {}
        if self.joiner is not None:
            arrays = {k: np.ascontiguousarray(v) for k, v in self.joiner.items()
                      if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
            text = {k: [v.tolist(), v.dtype.str] for k, v in self.joiner.items()
                    if isinstance(v, np.ndarray) and k not in arrays}   # strings: JSON, not pickle
            save_file(arrays, str(directory / JOINER))
            for name, table in self.joiner.items():
                if isinstance(table, pa.Table):
                    with pa.OSFile(str(directory / f"joiner.{name}.arrow"), "wb") as sink, \
                            pa.ipc.new_file(sink, table.schema) as writer:
                        writer.write_table(table)
                    tables.append(name)
        (directory / META).write_text(json.dumps({"step": self.step, "position": self.position, "meta": self.meta,
                                                  "joiner_tables": tables, "joiner_text": text}))

    @classmethod
    def load(cls, directory: Path) -> Checkpoint:
        saved = json.loads((directory / META).read_text())
        joiner = None
        if (directory / JOINER).exists():
            joiner = dict(load_file(str(directory / JOINER)))
            joiner.update({k: np.array(values, dtype) for k, (values, dtype) in saved["joiner_text"].items()})
            for name in saved["joiner_tables"]:
                with pa.memory_map(str(directory / f"joiner.{name}.arrow")) as source:
                    joiner[name] = pa.ipc.open_file(source).read_all()
        return cls(saved["step"], saved["position"], load_trainer(directory), saved["meta"], joiner)


class CheckpointStore:
    """Checkpoints under `root` (`ckpt-<step>`), the newest `keep` kept."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root, self.keep = Path(root), keep

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name)))

    def save(self, checkpoint: Checkpoint) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = publish_dir(self.root, f"ckpt-{checkpoint.step:012d}", checkpoint.save)
        for step in self.steps()[: -self.keep]:
            shutil.rmtree(self.root / f"ckpt-{step:012d}", ignore_errors=True)
        return path

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies (a torn one is skipped with a warning)."""
        for step in reversed(self.steps()):
            path = self.root / f"ckpt-{step:012d}"
            try:
                verify_dir(path)
                return Checkpoint.load(path)
            except CorruptVersion as error:
                log.warning("skipping checkpoint %s: %s", path, error)
        return None
