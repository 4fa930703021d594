"""`Replica`: one loaded copy of the model at a version, able to score request rows.

>>> import tempfile
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import build_model
>>> from freshrec.snapshot import Snapshot
>>> model = build_model("fm", [FeatureSpec("user_id", FieldKind.CATEGORICAL),
...                            FeatureSpec("item_id", FieldKind.CATEGORICAL)])
>>> replica = Replica.from_snapshot(Snapshot(model, version=3))
>>> replica.version, replica.columns
(3, {'user_id': <FieldKind.CATEGORICAL: 'categorical'>, 'item_id': <FieldKind.CATEGORICAL: 'categorical'>})
>>> rows = replica.rows("u1", ["i1", "i2"], shared=lambda column: None, per_item=lambda column: [None, None],
...                     item_columns=())
>>> replica.score(rows).tolist()
[0.5, 0.5]
>>> replica.unknown("item_id", ["i1", "i2"]).tolist()      # no row learned for either: cold starts
[True, True]
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from freshrec.events.event import ITEM, USER, FieldKind
from freshrec.events.live import check_ids, check_value
from freshrec.features.content import ItemContent, is_content
from freshrec.features.request import RequestFeaturizer, RequestRows
from freshrec.models.base import OnlineModel
from freshrec.snapshot import Delta, Snapshot
from freshrec.train.fused import fused_logits, fused_model, fused_slots

__all__ = ["Replica"]


@dataclass
class Replica:
    """A model at `version` (published at `created_at`), with the featurizer of its requests."""

    model: OnlineModel
    version: int
    created_at: float
    featurizer: RequestFeaturizer
    fusion: dict | None = None   # hedge weights published with this version (`w_online`, `offline_version`)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, content: ItemContent | None = None) -> Replica:
        return cls.from_snapshot_parts(snapshot.model, snapshot.version,
                                       float(snapshot.meta.get("created_at", time.time())), snapshot.meta.get("fusion"),
                                       content)

    @classmethod
    def from_snapshot_parts(cls, model: OnlineModel, version: int, created_at: float,
                            fusion: dict | None = None, content: ItemContent | None = None) -> Replica:
        """A replica of `model` (put in eval mode) at `version`; `content`: the items' content vectors, which a
        model with content features needs (ValueError without them)."""
        model.eval()
        return cls(model, version, created_at, RequestFeaturizer(model.specs, content=content), fusion)

    def advance(self, delta: Delta) -> None:
        """Apply `delta` (from this replica's version) in place."""
        if delta.since != self.version:
            raise ValueError(f"delta {delta.since}->{delta.version} does not follow version {self.version}")
        delta.apply(self.model)
        self.version = delta.version
        self.created_at = float(delta.meta.get("created_at", time.time()))
        self.fusion = delta.meta.get("fusion", self.fusion)

    @property
    def columns(self) -> dict[str, FieldKind]:
        """The source columns the model reads, with their kinds."""
        return {spec.source_column: spec.kind for spec in self.model.specs if not is_content(spec)}

    def rows(self, user: str | int, items: Sequence[str | int],
             shared: Callable[[str], object], per_item: Callable[[str], list],
             item_columns: Collection[str]) -> RequestRows:
        """One row per item for `user`. A column in `item_columns` takes `per_item(column)`, a value
        per item; any other column one value for all rows, `shared(column)` (None: missing).
        Values must be in their live form (`check_value`); ValueError names a bad id."""
        rows = RequestRows(len(items))
        for column, kind in self.columns.items():
            if column == ITEM:
                rows.per_row[column] = check_ids(items, column) if kind is FieldKind.CATEGORICAL else \
                    [check_value(item, kind, column) for item in items]
            elif column in item_columns:
                rows.per_row[column] = per_item(column)
            else:
                rows.shared[column] = check_value(user, kind, column) if column == USER else shared(column)
        return rows

    def score(self, rows: RequestRows) -> np.ndarray:
        """Probabilities (predictions for a rating model) of the rows, float32: an FM or LR in one
        numba pass over the rows where they lie (`fused_logits`, the trainer's arithmetic), other
        models by their forward without autograd."""
        return self.score_with_cold(rows, ())[0]

    @torch.no_grad()
    def score_with_cold(self, rows: RequestRows, columns: Sequence[str] = (USER, ITEM)) -> tuple[np.ndarray, dict]:
        """`score`, and for each categorical column of `columns` the model reads, per row whether its
        id has no learned row (a cold start): an FM's or LR's from the scoring's own lookup of the rows."""
        batch = self.featurizer.build(rows)
        sparse, slots = batch.sparse, None
        if fused_model(self.model):
            slots = fused_slots(self.model, batch)
            logits = fused_logits(self.model, batch, slots)
            scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
            if sparse.keys() != [s.name for s in self.model.embeddings.specs]:
                slots = None   # not in the batch's key order
        else:
            output = self.model(batch, train=False)
            if self.model.config.loss == "bce":
                output = torch.sigmoid(output)
            scores = output.numpy()
        if not columns:   # `score` (the offline model's, in a blend): no row lookups for cold starts
            return scores, {}
        keys, values = sparse.keys(), sparse.values().numpy()
        lengths = sparse.lengths().numpy().reshape(len(keys), -1)   # key-major, a row each
        bounds = np.concatenate([[0], np.cumsum(lengths.sum(1))])
        cold = {}
        for column in columns:
            if column not in self._features:
                continue
            name, table = self._features[column]
            k = keys.index(name)
            found = slots[bounds[k]:bounds[k + 1]] if slots is not None else \
                self.model.tables[table].slots(values[bounds[k]:bounds[k + 1]], 0.0, train=False)
            if len(found) == rows.n:
                cold[column] = found < 0
            else:   # a row without the id: cold too (a categorical column has one id a row at most)
                cold[column] = np.ones(rows.n, bool)
                cold[column][lengths[k] > 0] = found < 0
        return scores, cold

    @functools.cached_property
    def _features(self) -> dict[str, tuple[str, str]]:
        """Categorical source column -> (its feature, the table that feature's rows live in)."""
        tables = {s.name: s.table_name for s in self.model.embeddings.specs}   # FM: one for all
        return {s.source_column: (s.name, tables[s.name]) for s in self.model.specs
                if s.kind is FieldKind.CATEGORICAL and s.name in tables}

    def unknown(self, column: str, ids: Sequence[str]) -> np.ndarray:
        """Whether the model has no learned row for each of `ids` (live form: strings) of the
        categorical `column` (a cold start: its score comes from the other features alone); all
        False when the model reads no such column."""
        found = self.featurizer.ids(column, ids) if ids and column in self._features else None
        if found is None:
            return np.zeros(len(ids), bool)
        _, hashed = found   # hashed as the batches are, from the featurizer's cache
        return self.model.tables[self._features[column][1]].slots(hashed, 0.0, train=False) < 0
