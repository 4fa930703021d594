"""`Attachment`: a server's side of a share - models whose tables are the trainer's own rows,
mapped read-only, and whose dense weights are copied from the trainer's dense block.

`refresh()` follows the manifest (a cheap `stat` when nothing changed): more chunks and a resized
index are mapped into the tables in place (readers never see a chunk that is not there: a row past
the chunks mapped reads as absent until then); a new generation (a trainer took the share over)
maps new tables, which `model()` builds new models on. `read_dense(model)` copies the dense block
into a model that no request is using (the server keeps two: see `freshrec.serve.attached`).

>>> import tempfile
>>> import numpy as np
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.share.area import SharedArea
>>> from freshrec.share.writer import ShareWriter
>>> root = tempfile.mkdtemp()
>>> trainer_model = build_model("fm", [FeatureSpec("user_id", FieldKind.CATEGORICAL)])
>>> writer = ShareWriter(SharedArea("reader-demo", root=root), trainer_model)
>>> table = trainer_model.tables["fm"]
>>> rows = table.slots(np.array([42]), now=0.0)                      # the trainer adds a row
>>> attachment = Attachment(SharedArea("reader-demo", root=root))
>>> attachment.refresh()
'generation'
>>> model = attachment.model()
>>> header = attachment.read_dense(model)
>>> served = model.tables["fm"]
>>> bool((served.gather(served.slots(np.array([42]), 0.0, train=False)) == table.gather(rows)).all())
True
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from freshrec.embedding.index import IdIndex, IndexState
from freshrec.embedding.storage import ROWS, SEQ, RowStorage
from freshrec.models.base import OnlineModel
from freshrec.share.area import SharedArea
from freshrec.share.dense import DenseBlock, Header
from freshrec.snapshot import model_from_card

__all__ = ["Attachment", "MappedTable"]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only mapping (never written: torch's warning about that is moot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class MappedTable:
    """One shared table's files under `prefix`, mapped: its storage (the chunks mapped so far) and its
    index (`follow` maps what a manifest entry names)."""

    def __init__(self, area: SharedArea, prefix: str, dim: int, chunk_rows: int) -> None:
        self.area, self.prefix, self.dim = area, prefix, dim
        self.storage = RowStorage.reader(dim, chunk_rows)
        self.index = IdIndex()
        self.index_file: str | None = None

    def follow(self, entry: dict) -> None:
        """Map the chunks and the index file `entry` (the manifest's) names that are new."""
        chunk_rows = self.storage.chunk_rows
        for chunk in range(self.storage.chunks, int(entry["chunks"])):
            rows = self.area.open(f"{self.prefix}/{ROWS}.{chunk}", (chunk_rows, self.dim), np.float32)
            seq = self.area.open(f"{self.prefix}/{SEQ}.{chunk}", (chunk_rows, 1), np.int64)
            self.storage.extend(_tensor(rows), _tensor(seq))
        if entry["index"] != self.index_file:
            bits = int(entry["bits"])
            slots = self.area.open(f"{self.prefix}/{entry['index']}", (2 << bits,), np.int64)
            self.index.state = IndexState(slots, bits)
            self.index_file = entry["index"]


class Attachment:
    """Follows share `area`; `generation` is None until a trainer has published one."""

    def __init__(self, area: SharedArea) -> None:
        self.area = area
        self.generation: int | None = None
        self._seen: tuple[int, int] | None = None
        self._card: dict | None = None
        self._tables: dict[str, MappedTable] = {}
        self._dense: DenseBlock | None = None

    def refresh(self) -> str | None:
        """Follow the manifest: "generation" when a new generation was mapped (build models on it with
        `model()`), "grown" when tables grew, None when nothing changed."""
        seen = self.area.changed_since(self._seen)
        if seen is None:
            return None
        manifest = self.area.read_manifest()
        if manifest is None:
            return None
        self._seen = seen
        kind = "grown"
        if manifest["generation"] != self.generation:
            self._card = manifest["card"]
            prefix = f"gen-{manifest['generation']}"
            probe = model_from_card(self._card)
            self._tables = {name: MappedTable(self.area, f"{prefix}/{name}", table.config.dim,
                                               int(manifest["tables"][name]["chunk_rows"]))
                            for name, table in probe.tables.items()}
            self._dense = DenseBlock.open(self.area, manifest["dense"]["file"], manifest["dense"]["layout"])
            self.generation, kind = manifest["generation"], "generation"
        for name, mapped in self._tables.items():
            mapped.follow(manifest["tables"][name])
        return kind

    def model(self) -> OnlineModel:
        """A new model of the current generation, in eval mode: its tables read the shared rows (all
        such models share them); its dense weights are zero until `read_dense`."""
        model = model_from_card(self._card)
        for name, table in model.tables.items():
            table.attach(self._tables[name].storage, self._tables[name].index)
        return model.eval()

    def latest_version(self) -> int:
        """The dense block's version now (one word read: a hint that `read_dense` has more)."""
        return int(self._dense.block[8:16].view(np.int64)[0])

    def read_dense(self, model: OnlineModel) -> Header | None:
        """Copy the dense block into `model` (of this generation; no request may be using it); its
        header, or None when the block has nothing consistent to read."""
        with torch.no_grad():
            return self._dense.read(model.state_dict())
