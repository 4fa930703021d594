"""`SharedSpace`: what the clients of a federation share, and the layout of what they send.

A model's table rows are either shared or private. Shared: the rows of the catalogue, the ids of the
fields that do not describe a user (the item, its genres, the context) as the operator publishes
them, one array of rows per table, in catalogue order, the same on every client. Private: every other
row, above all those of the user-owned fields (`Field.owner == "user"`: the user id, age, zip...).
A private row never leaves its client; an id of a shared field outside the catalogue (an item newer
than it) is learned locally only, until the catalogue grows. The dense parameters are shared.

What the server learns from one round, through secure aggregation, is sums over the round's
clients: the sum of their updates of each shared row and dense parameter, the number of clients that
touched each catalogue row (without differential privacy: the server averages each row over the
clients that learned it, so that an item seen by one client is not diluted by the others), and their
summed score histogram of the evaluation events. It never sees one client's vector; it sees the
catalogue (public) and how many clients answered.

>>> import torch
>>> from freshrec.events.event import Field, FieldKind
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> sim = Simulator(SimulatorConfig(total_events=500, batch_size=500))
>>> specs = default_specs(sim.fields, dim=4)
>>> chunk = next(iter(sim))
>>> space = SharedSpace.of(FeaturePipeline(specs).build(chunk), specs, sim.fields)
>>> space.private_fields, {key: len(ids) for key, ids in space.catalogue.items()}
(('user_id', 'user_segment'), {'item_id': 222, 'item_category': 26, 'hour': 1})
>>> model = build_model("fm", specs)                  # one table "fm" of width 16 + 1 holds every field
>>> [a.shape for a in space.initial(model)]          # the catalogue's rows, then the bias and dense weight
[(222, 17), (26, 17), (1, 17), (1,), (1, 1)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.events.event import Field
from freshrec.features import FeatureSpec
from freshrec.metrics.streaming import Tally
from freshrec.models.base import OnlineModel

__all__ = ["BINS", "TALLY_SCALE", "SharedSpace", "Update"]

BINS = 4096
"""Bins of the evaluation score histograms (as `PrequentialMetrics` counts them)."""

TALLY_SCALE = 4096.0
"""Histogram counts travel divided by this (secure aggregation takes values in a bounded range)."""


def _ids_of(batch: Batch, names: Sequence[str]) -> np.ndarray:
    parts = [batch.sparse[name].values.numpy() for name in names]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class SharedSpace:
    """`catalogue`: id space (a table name, the ids' hashing salt) -> the sorted ids whose rows are
    shared; `features`: the same keys -> the sparse features hashed into it; `private_fields`: the
    sparse features whose rows stay on their client."""

    catalogue: dict[str, np.ndarray]
    features: dict[str, tuple[str, ...]]
    private_fields: tuple[str, ...]

    @classmethod
    def of(cls, batch: Batch, specs: Sequence[FeatureSpec], fields: Sequence[Field]) -> SharedSpace:
        """The catalogue of `batch` (the published items: every id of a field not owned by a user);
        an id that a user-owned field also yields (a hash collision) is left out, so it stays private."""
        owners = {f.name: f.owner for f in fields}
        sparse = [s for s in specs if s.is_sparse]
        private = tuple(s.name for s in sparse if owners.get(s.source_column) == "user")
        features: dict[str, tuple[str, ...]] = {}
        for spec in sparse:
            if spec.name not in private:
                features[spec.table_name] = (*features.get(spec.table_name, ()), spec.name)
        personal = _ids_of(batch, private)
        return cls({key: np.setdiff1d(_ids_of(batch, names), personal) for key, names in features.items()},
                   features, private)

    def tables(self, model: OnlineModel) -> dict[str, str]:
        """Id space -> the model's table that stores it (a model may keep every field in one table)."""
        stored = {spec.name: spec.table_name for spec in model.embeddings.specs}
        return {key: stored[names[0]] for key, names in self.features.items()}

    def initial(self, model: OnlineModel) -> list[np.ndarray]:
        """The global arrays of a fresh `model`: the catalogue's rows (admitted as the model's tables
        initialise new rows), then the dense parameters."""
        for key, table in self.tables(model).items():
            model.tables[table].slots(self.catalogue[key], 0.0, train=True)
        return self.arrays(model)

    def arrays(self, model: OnlineModel) -> list[np.ndarray]:
        """The shared part of `model`: the catalogue's rows per id space, then the dense parameters."""
        rows = [model.tables[table].gather(model.tables[table].slots(self.catalogue[key], 0.0, train=False))
                .cpu().numpy() for key, table in self.tables(model).items()]
        return rows + [p.detach().cpu().numpy().copy() for _, p in model.named_parameters()]

    def adopt(self, model: OnlineModel, arrays: Sequence[np.ndarray]) -> None:
        """Set the shared part of `model` to `arrays` (as `arrays` returns them); private rows stay."""
        tables = self.tables(model)
        for (key, table), rows in zip(tables.items(), arrays):
            model.tables[table].write(self.catalogue[key], rows)
        with torch.no_grad():
            for (_, p), value in zip(model.named_parameters(), arrays[len(tables):]):
                p.copy_(torch.from_numpy(np.asarray(value, np.float32)).reshape(p.shape))

    def touched(self, batches: Sequence[Batch]) -> list[np.ndarray]:
        """Per id space, 1.0 where the catalogue's id occurs in one of `batches` (float32)."""
        seen = {key: np.concatenate([np.zeros(0, np.int64)] + [_ids_of(b, names) for b in batches])
                for key, names in self.features.items()}
        return [np.isin(ids, seen[key]).astype(np.float32) for key, ids in self.catalogue.items()]


@dataclass
class Update:
    """One client's round, in the arrays that travel: `delta` (the shared arrays learned minus the
    global ones), `touched` (per table, which catalogue rows it learned; empty under differential
    privacy, where the server averages over the sampled clients instead) and `tally` (the scores of
    its evaluation events)."""

    delta: list[np.ndarray]
    touched: list[np.ndarray]
    tally: Tally

    def pack(self) -> list[np.ndarray]:
        """The arrays secure aggregation sums (float64; histogram counts scaled by 1/`TALLY_SCALE`)."""
        t = self.tally
        extra = np.array([t.pred, t.loss], np.float64)
        return ([np.asarray(a, np.float64) for a in self.delta + self.touched]
                + [t.counts.astype(np.float64) / TALLY_SCALE, extra / TALLY_SCALE])

    @classmethod
    def unpack(cls, arrays: Sequence[np.ndarray], shared: int, tables: int) -> Update:
        """The inverse of `pack` for `shared` shared arrays, `tables` of them with touched rows
        (0 under differential privacy); histogram counts rounded back to integers."""
        delta, touched = list(arrays[:shared]), list(arrays[shared:shared + tables])
        counts, extra = arrays[shared + tables], arrays[shared + tables + 1] * TALLY_SCALE
        return cls(delta, touched, Tally(np.rint(counts * TALLY_SCALE).astype(np.int64), float(extra[0]),
                                         float(extra[1])))
