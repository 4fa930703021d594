"""Checkpoints for an exactly-once training effect: the trainer (model, tables, optimizer state,
random state), the joiner's state, the source position and the engine's own counters, written
together as one atomic, verified version directory (`freshrec.snapshot.files`); most hold only the
tables' changes since the checkpoint before (`CheckpointStore.full_every`). Restoring the newest
valid one and seeking the source to its position continues the run as if it had never stopped.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer, TrainerConfig
>>> store = CheckpointStore(tempfile.mkdtemp(), full_every=2)   # whole, increment, whole, ...
>>> trainer = OnlineTrainer(build_model("lr", [FeatureSpec("user_id", FieldKind.CATEGORICAL)]))
>>> for step in (1, 2, 3, 4, 5, 6):
...     _ = store.save(Checkpoint(step, {"row": 100 * step}, trainer, {"events": 100 * step}))
>>> store.steps(), [base_of(store.path(step)) for step in store.steps()], store.latest().position
([3, 4, 5, 6], [None, 3, None, 5], {'row': 600})
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from safetensors.numpy import load_file, save_file

from freshrec._durable import WriteBehind
from freshrec.engine.trainer_state import base_of, capture_increment, load_trainer, save_trainer, table_versions
from freshrec.events.source import Position
from freshrec.snapshot.files import CorruptVersion, publish_dir, verify_dir
from freshrec.train import OnlineTrainer, TrainerConfig

__all__ = ["Checkpoint", "CheckpointStore"]

log = logging.getLogger(__name__)
META, JOINER = "checkpoint.json", "joiner.safetensors"
_NAME = re.compile(r"^ckpt-(\d{12})$")


@dataclass
class Checkpoint:
    """Step `step`: `position` is the source position after the last event whose effect the
    trainer (and joiner) hold; `meta` is JSON (counters, log sequence, published version); `parts`:
    the state of the loop's other stages at the cut, each a function (holding a copy) that writes it
    into the subfolder of its name (e.g. `retrieval`: the two-tower's learner)."""

    step: int
    position: Position
    trainer: OnlineTrainer
    meta: dict[str, Any] = field(default_factory=dict)
    joiner: dict[str, np.ndarray | pa.Table] | None = None
    parts: dict[str, Callable[[Path], None]] = field(default_factory=dict)

    def save(self, directory: Path, since: tuple[int, dict[str, int]] | None = None) -> None:
        """Write it to `directory`; with `since` (a checkpoint's step and table versions), the tables
        as the changes after that checkpoint (`save_trainer`)."""
        if since is not None:
            self.capture(since)(directory)
            return
        save_trainer(self.trainer, directory)
        self._save_rest(directory)

    def capture(self, since: tuple[int, dict[str, int]]) -> Callable[[Path], None]:
        """What `save(directory, since)` writes, copied now (`capture_increment`); the returned
        function writes it into a directory later, from any thread."""
        trainer = capture_increment(self.trainer, since)

        def write(directory: Path) -> None:
            trainer(directory)
            self._save_rest(directory)
        return write

    def _save_rest(self, directory: Path) -> None:
        """The other stages' parts, the joiner's state (taken by the reader at the cut: already a copy) and the
        record."""
        for name, write in self.parts.items():
            write(directory / name)
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
    def load(cls, directory: Path, base: Callable[[int], Path] | None = None,
             placement: TrainerConfig | None = None) -> Checkpoint:
        """The checkpoint in `directory`; `base(step)`: the directory of an earlier checkpoint an
        incremental one builds on; `placement`: the device and precision to continue with (this
        run's, not the saving run's)."""
        saved = json.loads((directory / META).read_text())
        joiner = None
        if (directory / JOINER).exists():
            joiner = dict(load_file(str(directory / JOINER)))
            joiner.update({k: np.array(values, dtype) for k, (values, dtype) in saved["joiner_text"].items()})
            for name in saved["joiner_tables"]:
                with pa.memory_map(str(directory / f"joiner.{name}.arrow")) as source:
                    joiner[name] = pa.ipc.open_file(source).read_all()
        return cls(saved["step"], saved["position"], load_trainer(directory, base, placement), saved["meta"], joiner)


class CheckpointStore:
    """Checkpoints under `root` (`ckpt-<step>`). Every `full_every`-th is whole; the others hold the
    tables' changes since the checkpoint before them (rows written or sighted, ids deleted), so a
    checkpoint costs what changed, not the size of the tables. The newest two chains (a whole
    checkpoint and the increments on it) are kept."""

    def __init__(self, root: str | Path, full_every: int = 10) -> None:
        self.root, self.full_every = Path(root), full_every
        self._last: tuple[int, dict[str, int]] | None = None   # the newest checkpoint's step and table versions
        self._chain = 0
        self._dropped = False   # set by the writer's thread: a checkpoint was dropped (see `save_behind`)

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.root / f"ckpt-{step:012d}"

    def save(self, checkpoint: Checkpoint) -> Path:
        """Write `checkpoint` atomically (whole, or the changes since the newest one), then drop
        the chains older than the newest two."""
        since = self._since()
        path = self._write(checkpoint.step, lambda d: checkpoint.save(d, since))
        self._saved(checkpoint, since)
        return path

    def save_behind(self, checkpoint: Checkpoint, writes: WriteBehind, ready: Callable[[], bool],
                    done: Callable[[], object]) -> None:
        """`save` with the files written by `writes`, behind the caller: an increment is captured now
        (`Checkpoint.capture`) and written on the writer's thread while the trainer goes on; a whole
        checkpoint is written at once, after the writes queued before it. On the thread that writes
        it, `ready()` comes first (False: the checkpoint is dropped, with the increments queued on
        it, and the next one is whole) and `done()` once it is durable."""
        if self._dropped:
            self._dropped, self._last = False, None
        since = self._since()
        if since is None:
            writes.drain()
            if ready():
                self._write(checkpoint.step, lambda d: checkpoint.save(d, None))
                self._saved(checkpoint, None)
                done()
            return
        write = checkpoint.capture(since)
        self._saved(checkpoint, since)

        def job() -> None:
            if self._dropped or not ready():
                self._dropped = True
                return
            self._write(checkpoint.step, write)
            done()
        writes.submit(job)

    def _since(self) -> tuple[int, dict[str, int]] | None:
        """What the next checkpoint builds on (None: it is whole)."""
        return self._last if self._last is not None and self._chain < self.full_every - 1 else None

    def _saved(self, checkpoint: Checkpoint, since: tuple[int, dict[str, int]] | None) -> None:
        self._chain = 0 if since is None else self._chain + 1
        self._last = (checkpoint.step, table_versions(checkpoint.trainer.model))

    def _write(self, step: int, write: Callable[[Path], None]) -> Path:
        """Publish checkpoint `step` atomically, then drop the chains older than the newest two."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = publish_dir(self.root, f"ckpt-{step:012d}", write)
        whole = [old for old in self.steps() if base_of(self.path(old)) is None]
        for old in self.steps():
            if len(whole) > 2 and old < whole[-2]:
                shutil.rmtree(self.path(old), ignore_errors=True)
        return path

    def latest(self, placement: TrainerConfig | None = None) -> Checkpoint | None:
        """The newest checkpoint that verifies, with every checkpoint it builds on (a torn one is
        skipped with a warning, and so is one whose chain is broken); `placement` as in `load`."""
        for step in reversed(self.steps()):
            try:
                return self.load(step, placement)
            except (CorruptVersion, FileNotFoundError) as error:
                log.warning("skipping checkpoint %s: %s", self.path(step), error)
        return None

    def load(self, step: int, placement: TrainerConfig | None = None, continued: bool = True) -> Checkpoint:
        """Checkpoint `step`, verified with every checkpoint it builds on (`CorruptVersion` or
        `FileNotFoundError` if one is torn or gone); `continued`: the next checkpoint saved here
        builds on it (False: whole, e.g. when its tables were resharded)."""
        checkpoint = Checkpoint.load(self._verified(step), self._verified, placement)
        if continued:
            self._last, self._chain = (step, table_versions(checkpoint.trainer.model)), self._depth(step)
        else:
            self._last, self._chain = None, 0
        return checkpoint

    def drop_after(self, step: int) -> None:
        """Remove the checkpoints after `step` (never committed: a group's cut did not reach them)."""
        for later in self.steps():
            if later > step:
                shutil.rmtree(self.path(later), ignore_errors=True)

    def _depth(self, step: int) -> int:
        """How many increments lead from the newest whole checkpoint to `step`."""
        depth = 0
        while (step := base_of(self.path(step))) is not None:
            depth += 1
        return depth

    def _verified(self, step: int) -> Path:
        path = self.path(step)
        verify_dir(path)
        return path
