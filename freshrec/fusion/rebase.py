"""`rebase(online, offline)`: the online model takes over a freshly retrained offline model's
weights and goes on learning from there (Monolith-style warm start of the online model).

What happens, in place on `online` (its parameters stay the same tensors, so the online trainer's
dense optimizer keeps them; that optimizer's state is left as it was):

- dense weights: all of `offline`'s (`load_state_dict`, every parameter and buffer);
- each table, each id `offline` holds: the row and its row-wise optimizer state become
  `offline`'s; an id `online` lacks (never seen, or evicted) gets a row. Its bookkeeping (sightings
  and last event time, which drive TTL and LFU/LRU eviction) stays `online`'s where `online`
  has the id, else comes from `offline`;
- each table, each id only `online` holds (typically seen after the offline range ended, or
  evicted from `offline`): its row, state and bookkeeping stay as they are;
- every row written counts as one update of the table (version + 1, rows marked dirty), so the
  next `Delta` carries them to the servers. The online table's admission sketch is kept; a table
  with a `capacity` trims the union at its next `evict`.

So on ids both know, and on the dense part, the online model then predicts exactly as the offline
one. Call it in the thread that trains `online` (a table has one writer), e.g. once an
`OfflineRunner` future is done; `offline` is only read.

>>> import numpy as np, torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import OnlineFM
>>> from freshrec.train import OnlineTrainer
>>> specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL)]
>>> def batch(users, labels):
...     return Batch(SparseFeatures(["user_id"], torch.tensor(users), torch.ones(len(users), dtype=torch.int32)),
...                  dense=torch.zeros(len(users), 0), labels=torch.tensor(labels),
...                  ts=torch.zeros(len(users), dtype=torch.float64))
>>> online, offline = OnlineTrainer(OnlineFM(specs)), OnlineTrainer(OnlineFM(specs))
>>> _ = online.learn(batch([1, 2, 3], [1.0, 0.0, 1.0]))      # user 3 only online
>>> for _ in range(5): _ = offline.learn(batch([1, 2], [0.0, 1.0]))
>>> rebase(online.model, offline.model)
>>> both = batch([1, 2], [float("nan")] * 2)
>>> bool(torch.equal(online.predict(both), offline.predict(both))), online.model.table.live
(True, 3)
"""

from __future__ import annotations

import numpy as np
import torch

from freshrec.embedding import DynamicEmbedding, TableDelta
from freshrec.models import OnlineModel

__all__ = ["rebase"]


def _check(online: OnlineModel, offline: OnlineModel) -> None:
    if type(online) is not type(offline) or set(online.tables) != set(offline.tables):
        raise ValueError(f"cannot rebase a {type(online).__name__} with tables {sorted(online.tables)} "
                         f"on a {type(offline).__name__} with tables {sorted(offline.tables)}")
    for name, table in online.tables.items():
        theirs = offline.tables[name].config
        if (table.config.dim, table.config.optimizer) != (theirs.dim, theirs.optimizer):
            raise ValueError(f"table {name!r}: dim and row optimizer differ ({table.config} vs {theirs})")


def _rebase_table(online: DynamicEmbedding, offline: DynamicEmbedding) -> None:
    """Upsert `offline`'s rows into `online`, as one update (see the module docstring)."""
    theirs, ours = offline.state_dict(), online.state_dict()
    ids, counts, last_seen = theirs["ids"], theirs["counts"].copy(), theirs["last_seen"].copy()
    order = np.argsort(ours["ids"], kind="stable")
    at = np.searchsorted(ours["ids"], ids, sorter=order).clip(max=max(len(order) - 1, 0))
    known = np.zeros(len(ids), bool) if not len(order) else ours["ids"][order[at]] == ids
    counts[known] = ours["counts"][order[at[known]]]
    last_seen[known] = ours["last_seen"][order[at[known]]]
    state = {key.removeprefix("state."): value for key, value in theirs.items() if key.startswith("state.")}
    online.apply_delta(TableDelta(online.version, online.version + 1, ids, theirs["rows"], state, counts,
                                  last_seen, deleted=np.zeros(0, np.int64)))


@torch.no_grad()
def rebase(online: OnlineModel, offline: OnlineModel) -> None:
    """Give `online` the weights of `offline` (dense, and every table's rows and optimizer state on
    the ids `offline` holds); ids only `online` holds keep theirs. See the module docstring."""
    _check(online, offline)
    online.load_state_dict(offline.state_dict(), strict=True)
    for name, table in online.tables.items():
        _rebase_table(table, offline.tables[name])
