"""Moving rows to their new owners when a group restarts with another world size.

The checkpoints of one cut hold every row once, each in its owner's shard. `merged_table_state`
takes the rows (values, optimizer state, sightings, last event time) of the shards that rank
`rank` of a group of `world` now owns; `assemble` puts every shard of a cut back into one model
(a group of one), e.g. to score a probe set or to serve the whole model.

>>> import numpy as np
>>> from freshrec.embedding import DynamicEmbedding, TableConfig
>>> shards = [DynamicEmbedding(TableConfig(dim=2)) for _ in range(2)]
>>> ids = np.arange(1, 9, dtype=np.int64) * 7919
>>> for rank, shard in enumerate(shards):
...     _ = shard.slots(ids[owners(ids, 2) == rank], now=0.0)
>>> states = [s.state_dict() for s in shards]
>>> three = [merged_table_state(states, rank, 3) for rank in range(3)]
>>> sorted(np.concatenate([s["ids"] for s in three]).tolist()) == sorted(ids.tolist())
True
>>> all(bool((owners(s["ids"], 3) == rank).all()) for rank, s in enumerate(three))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from freshrec.cluster.owners import owners
from freshrec.embedding import DynamicEmbedding
from freshrec.embedding.snapshot import merge_states

__all__ = ["merged_table_state", "replace_tables"]


def merged_table_state(shards: Sequence[dict[str, np.ndarray]], rank: int, world: int,
                       generator: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A `DynamicEmbedding.state_dict()` holding the rows of `shards` (the state dicts of one table's
    shards at one cut) that `rank` owns in a group of `world` (`merge_states`), drawing new rows
    from the generator `generator` (None: shard `rank`'s, or shard 0's); its counters count the
    rows it holds as admitted and none evicted."""
    out = merge_states(shards, [owners(s["ids"], world) == rank for s in shards])
    own = shards[rank] if rank < len(shards) else shards[0]
    out["generator"] = own["generator"] if generator is None else generator
    out["counters"] = np.array([out["counters"][0], len(out["ids"]), 0], np.int64)
    return out


def replace_tables(tables: dict[str, DynamicEmbedding], states: dict[str, dict[str, np.ndarray]]) -> None:
    """Replace each table of `tables` (in place) by an empty one of its config filled with `states[name]`."""
    for name, table in list(tables.items()):
        fresh = DynamicEmbedding(table.config)
        fresh.load_state_dict(states[name])
        tables[name] = fresh
