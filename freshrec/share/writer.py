"""`ShareWriter`: the trainer's side of a share - its model's tables in the area's memory, and the
dense block written after each chunk it learns.

Taking a share (`ShareWriter(area, model)`) locks the area (one live writer: `AreaBusy` otherwise),
starts a new generation, moves each table's rows, optimizer state, per-row counters and id index
into the generation's files (the model goes on learning in them, in place) and publishes the
manifest; the generations before are deleted (servers that still map one keep it until they move
to the new one). A trainer restarted from its checkpoint so takes the share of one that died over;
the servers move to its generation at their next poll. Each growth of a table's storage and each
resize of its index publishes a new manifest before the new rows or slots are used.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.share.area import SharedArea
>>> model = build_model("fm", [FeatureSpec("user_id", FieldKind.CATEGORICAL)])
>>> writer = ShareWriter(SharedArea("writer-demo", root=tempfile.mkdtemp()), model)
>>> writer.publish(events=0, entered=None)       # after each chunk learned
>>> manifest = writer.area.read_manifest()
>>> manifest["generation"], sorted(manifest["tables"]), writer.version
(1, ['fm'], 2)
>>> writer.close()
"""

from __future__ import annotations

import os
import threading

import numpy as np

from freshrec.embedding.snapshot import config_to_json
from freshrec.models.base import OnlineModel
from freshrec.share.area import SharedArea
from freshrec.share.dense import DenseBlock
from freshrec.snapshot import model_card

__all__ = ["FORMAT", "ShareWriter"]

FORMAT = "freshrec.share/1"


class ShareWriter:
    """Shares `model` (which goes on learning in this process) through `area`; `events`: how many it
    has learned already (a trainer restored from a checkpoint)."""

    def __init__(self, area: SharedArea, model: OnlineModel, events: int = 0) -> None:
        area.take()
        try:
            self._take_over(area, model, events)
        except BaseException:
            area.remove(f"gen-{getattr(self, 'generation', 0)}")
            area.release()
            raise

    def _take_over(self, area: SharedArea, model: OnlineModel, events: int) -> None:
        self.area, self.model = area, model
        self._lock = threading.Lock()   # a lookahead thread may grow a table while the loop publishes
        self.version = _last_version(area)
        self.generation = max([0, *area.generations()]) + 1
        self._prefix = f"gen-{self.generation}"
        self._index_files: dict[str, int] = {}   # each table's index file now: index.N
        self._retired: str | None = None
        self._ready = False
        self._tables = dict(model.tables)
        self.dense = DenseBlock.create(area, f"{self._prefix}/dense", model.state_dict())
        for name, table in self._tables.items():
            table.share(area.chunk_allocator(f"{self._prefix}/{name}"), self._index_allocator(name),
                        self._publish_manifest)
        self._ready = True
        self.publish(events, entered=None)
        self._publish_manifest()
        for generation in area.generations():
            if generation != self.generation:
                area.remove(f"gen-{generation}")

    def _index_allocator(self, table: str):
        def allocate(bits):
            number = self._index_files[table] = self._index_files.get(table, 0) + 1
            if number > 1:   # the previous file is deleted once the manifest names this one (mappings stay valid)
                self._retired = f"{self._prefix}/{table}/index.{number - 1}"
            return self.area.create(f"{self._prefix}/{table}/index.{number}", (2 << bits,), np.int64)
        return allocate

    def _publish_manifest(self) -> None:
        if not self._ready:   # the constructor publishes once every table is shared
            return
        with self._lock:
            tables = {name: {"config": config_to_json(table.config), "chunk_rows": table.storage.chunk_rows,
                             "chunks": table.storage.chunks, "index": f"index.{self._index_files[name]}",
                             "bits": table.index_bits}
                      for name, table in self._tables.items()}
            self.area.write_manifest({
                "format": FORMAT, "generation": self.generation, "pid": os.getpid(), "card": model_card(self.model),
                "tables": tables, "dense": {"file": f"{self._prefix}/dense", "layout": self.dense.layout}})
            if self._retired is not None:
                self.area.remove(self._retired)
                self._retired = None

    def publish(self, events: int, entered: float | None) -> None:
        """After a chunk is learned: the dense weights at the next version, with the events learned so
        far and when the oldest event learned since the last publish entered (for freshness)."""
        self.version += 1
        self.dense.write(self.model.state_dict(), self.version, events, entered)

    def close(self) -> None:
        """Stop writing: the last state stays for the servers; another trainer may take the share."""
        self.area.release()


def _last_version(area: SharedArea) -> int:
    """The version the area's last writer reached (0: none), so that versions go on increasing."""
    manifest = area.read_manifest()
    if manifest is None:
        return 0
    try:
        header = DenseBlock.open(area, manifest["dense"]["file"], manifest["dense"]["layout"]).read()
    except (OSError, ValueError, KeyError):
        return 0
    return header.version if header is not None else 0
