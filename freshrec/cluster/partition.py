"""`RankShare`: one rank's share of a replayed stream, by a hash of the user.

Every rank reads the whole source in the same chunks and keeps the rows whose user it owns (jump
consistent hashing of the user's 64-bit hash, as the tables shard ids), so each user's events stay
in order on one rank, and the ranks' chunks line up: chunk k of every rank stands for the same
source rows (`EventChunk.read`), so the loop's checkpoint cuts fall after the same chunk on every
rank and the source position is the same on all (a restart with another world size reads on from
it). The whole chunk is cut into micro-batches as one process would cut it (`micro_batch_sizes`:
`batch_size` rows, the `window` of event time, each user once), and each rank learns its rows of
micro-batch k at the group's step k (`EventChunk.parts`; 0 where it has none): a step of the group
learns exactly the events one process learns in one micro-batch. Reading and validating every row
on every rank costs little beside training; rank 0 alone keeps the dead letters (the other ranks'
sinks count and drop them: `Discarded`).

>>> import numpy as np, pyarrow as pa
>>> from freshrec.events.source import TableReplay
>>> table = pa.table({"ts": np.arange(8.0), "user_id": [f"u{i % 4}" for i in range(8)]})
>>> shares = [RankShare(TableReplay(table, np.arange(8), name="demo", batch_size=4), rank, 2, batch_size=3)
...           for rank in (0, 1)]
>>> [[(len(chunk), chunk.events_read, chunk.parts.tolist()) for chunk in share] for share in shares]
[[(2, 4, [1, 1]), (2, 4, [1, 1])], [(2, 4, [2, 0]), (2, 4, [2, 0])]]
>>> shares[0].position()
{'row': 8}
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from freshrec._hashing import field_salt, hash_values
from freshrec.batch import micro_batch_sizes
from freshrec.cluster.owners import owners
from freshrec.events.deadletter import CountingDeadLetters, DeadLetter
from freshrec.events.event import TS, USER, EventChunk
from freshrec.events.source import Source, SourceOver

__all__ = ["Discarded", "RankShare"]

_SALT = field_salt(USER)


class RankShare(SourceOver):
    """The rows of `source` whose user `rank` owns in a group of `world` (a `Source`)."""

    def __init__(self, source: Source, rank: int, world: int, batch_size: int = 512,
                 window: float | None = None) -> None:
        super().__init__(source)
        self.rank, self.world, self.batch_size, self.window = rank, world, batch_size, window

    def __iter__(self) -> Iterator[EventChunk]:
        for chunk in self.source:
            users = hash_values(chunk.table.column(USER), _SALT)
            mine = owners(users, self.world) == self.rank
            ts = chunk.table.column(TS).to_numpy()
            sizes = micro_batch_sizes(ts, self.batch_size, self.window, users, np.ones(len(users), np.bool_))
            parts = np.bincount(np.repeat(np.arange(len(sizes)), sizes)[mine], minlength=len(sizes))
            yield EventChunk(chunk.table.filter(mine), chunk.positions[mine], chunk.source, chunk.kind,
                             chunk.entered, read=chunk.events_read, parts=parts)


class Discarded(CountingDeadLetters):
    """A dead-letter sink that counts and drops (the ranks but 0, which read the same bad rows)."""

    def _store(self, letter: DeadLetter) -> None:
        """Counted by `put`; nothing kept."""
