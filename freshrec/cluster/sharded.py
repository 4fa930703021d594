"""`ShardedCollection`: a model's embedding tables sharded by id over the ranks of a `Group`.

Each id has one owner rank (`owners`, jump consistent hashing); a rank's tables hold the rows of
the ids it owns, with their optimizer state, admission and eviction (the owner's business). One
training step on every rank, in the same order:

1. the ranks gather one small header: how many distinct ids of each table each rank sends to each
   owner, the batch's newest event time and its labelled events;
2. one all-to-all sends each batch's distinct ids to their owners, which look them up (admitting
   new ones, `DynamicEmbedding.slots`), and a second sends the rows back;
3. the rank scores and backpropagates its batch locally on those rows;
4. a third all-to-all (`send_gradients`) returns each row's gradient to its owner, with the dense
   gradients riding along to every rank; unless the step is skipped, each owner then sums the
   gradients of an id from every rank and takes one row-wise optimizer step (`apply_received`).

A rank with no batch at a step takes part with none (`idle_lookup`): it still serves its rows.
The rows, their gradients and the exchanges stay on the group's device (`Group.device`: the
rank's GPU, with NCCL); the ids are looked up on the host, where the tables' index is.
With the same events the group learns what one process learns from their union (the owners'
rows start from their own random streams). A group of one is an ordinary collection.

>>> import torch
>>> from freshrec.batch import SparseFeatures
>>> from freshrec.cluster.group import Group
>>> from freshrec.embedding import EmbeddingCollection, TableConfig
>>> from freshrec.embedding.optimizers import SGD
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> local = EmbeddingCollection([FeatureSpec("user_id", FieldKind.CATEGORICAL, dim=2)],
...                             TableConfig(dim=2, initializer="zeros", optimizer=SGD(lr=1.0)))
>>> sharded = ShardedCollection(local, Group.alone())
>>> ids = SparseFeatures(["user_id"], torch.tensor([7, 9, 7]), torch.ones(3, dtype=torch.int32))
>>> sharded.events = 3                            # this rank's labelled events in the step
>>> pooled = sharded(ids, now=0.0, train=True)["user_id"]
>>> pooled.sum().backward(); sharded.apply_gradients()
>>> sharded.tables["user_id"].gather(sharded.tables["user_id"].slots(np.array([7, 9]), 0.0, False)).tolist()
[[-2.0, -2.0], [-1.0, -1.0]]
>>> sharded.rows_sent, sharded.global_events          # distinct ids asked for; every rank's events
(2, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from freshrec.batch import SparseFeatures
from freshrec.cluster.group import Group
from freshrec.cluster.owners import owners
from freshrec.embedding import EmbeddingCollection

__all__ = ["ShardedCollection", "shard_model"]


def _grid(flat, sizes: np.ndarray) -> list:
    """`flat` (an array or a tensor) cut into consecutive blocks of `sizes[i, j]` items, as
    `blocks[i][j]` (the layout of every exchange: per rank, then per table)."""
    ends = np.cumsum(sizes.ravel())
    cut = np.split(flat, ends[:-1]) if isinstance(flat, np.ndarray) else torch.split(flat, sizes.ravel().tolist())
    return [cut[i * sizes.shape[1]:(i + 1) * sizes.shape[1]] for i in range(sizes.shape[0])]


@dataclass
class _Wanted:
    """One table's distinct ids in a batch: `unique` (sorted), `inverse` (each occurrence's place in
    it), `order` (unique sorted by owner), `counts` (ids per owner)."""

    keys: list[str]
    sizes: list[int]
    unique: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    counts: np.ndarray


@dataclass
class _Served:
    """What a step left for `apply_gradients`: this rank's rows (leaf tensors, in `unique` order) and,
    as owner, the slots it served each rank (`slots[t]`, blocks of `received[r, t]` ids per rank r)."""

    wanted: list[_Wanted]
    rows: list[torch.Tensor]
    slots: list[np.ndarray]
    received: np.ndarray


class ShardedCollection(EmbeddingCollection):
    """The tables of `local` (an `EmbeddingCollection`) as this rank's shards of `group`'s tables."""

    def __init__(self, local: EmbeddingCollection, group: Group) -> None:
        nn.Module.__init__(self)
        self.specs, self.pooling, self.tables, self.group = local.specs, local.pooling, local.tables, group
        self.events = 0              # this rank's labelled events at the coming step (set by the trainer)
        self.global_events = 0       # every rank's, after the step's header
        self.rows_sent = 0           # rows this rank asked for (distinct ids per step)
        self._step: _Served | None = None
        self._received: list[torch.Tensor] | None = None    # gradients for this rank's rows, per rank

    def lookup(self, sparse: SparseFeatures, now: float,
               train: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Unpooled rows per feature, fetched from their owners (see the module docstring)."""
        features = sparse.to_dict()
        wanted = [self._wanted(name, features) for name in self.tables]
        rows = self._exchange(wanted, now, train)
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for want, unique_rows in zip(wanted, rows):
            occurrences = unique_rows[torch.from_numpy(want.inverse).to(unique_rows.device)]
            for key, part in zip(want.keys, torch.split(occurrences, want.sizes)):
                out[key] = (part, features[key].lengths)
        return {spec.name: out[spec.name] for spec in self.specs}

    def idle_lookup(self) -> None:
        """Take part in a step with no batch: serve the rows other ranks ask this rank for."""
        empty = np.zeros(0, np.int64)
        wanted = [_Wanted([], [], empty, empty, empty, np.zeros(self.group.world, np.int64)) for _ in self.tables]
        self.events = 0
        self._exchange(wanted, -np.inf, train=True)

    def _wanted(self, name: str, features: dict) -> _Wanted:
        keys = [s.name for s in self.specs if s.table_name == name]
        parts = [features[k].values for k in keys]
        ids = (torch.cat(parts) if len(parts) > 1 else parts[0]).cpu().numpy()
        unique, inverse = np.unique(ids, return_inverse=True)
        rank = owners(unique, self.group.world)
        return _Wanted(keys, [p.numel() for p in parts], unique, inverse.astype(np.int64),
                       np.argsort(rank, kind="stable"), np.bincount(rank, minlength=self.group.world))

    def _exchange(self, wanted: list[_Wanted], now: float, train: bool) -> list[torch.Tensor]:
        """Steps 1 and 2: the header, the ids to their owners, the rows back (in `unique` order)."""
        g, tables = self.group, list(self.tables.values())
        counts = np.stack([w.counts for w in wanted])                        # [tables, owners]
        header = torch.from_numpy(np.concatenate([counts.ravel().astype(np.float64), [now, self.events]]))
        every = g.gather(header).cpu().numpy()
        received = every[:, :-2].reshape(g.world, len(tables), g.world)[:, :, g.rank].astype(np.int64)  # [rank, table]
        owner_now = float(every[:, -2].max())
        self.global_events = int(every[:, -1].sum())
        by_owner = [np.split(w.unique[w.order], np.cumsum(w.counts)[:-1]) for w in wanted]   # [table][owner]
        ids = np.concatenate([np.zeros(0, np.int64)] + [part[d] for d in range(g.world) for part in by_owner])
        got = g.all_to_all(torch.from_numpy(ids), counts.sum(axis=0).tolist(), received.sum(axis=1).tolist())
        slots, values = self._serve(got.cpu().numpy(), received, owner_now, train)
        dims = np.array([t.config.dim for t in tables])
        back = g.all_to_all(values, (received * dims).sum(axis=1).tolist(),
                            (counts * dims[:, None]).sum(axis=0).tolist())
        rows = self._unpack(back, counts, dims, wanted)
        self.rows_sent += int(counts.sum())
        self._step = _Served(wanted, rows, slots, received) if train else None
        if train:
            for unique_rows in rows:
                unique_rows.requires_grad_(True)
        return rows

    def _serve(self, ids: np.ndarray, received: np.ndarray, now: float, train: bool
               ) -> tuple[list[np.ndarray], torch.Tensor]:
        """As owner: the slots of the ids each rank sent (per table) and their rows, packed per rank."""
        blocks = _grid(ids, received)                                         # [rank][table]
        slots, packed = [], []
        for t, table in enumerate(self.tables.values()):
            asked = np.concatenate([np.zeros(0, np.int64)] + [blocks[r][t] for r in range(self.group.world)])
            found = table.slots(asked, now, train) if len(asked) else np.zeros(0, np.int64)
            slots.append(found)
            packed.append(torch.split(table.gather(found), received[:, t].tolist()))   # [table][rank]
        order = [packed[t][r].reshape(-1) for r in range(self.group.world) for t in range(len(slots))]
        return slots, torch.cat([torch.zeros(0, device=self.group.device)] + order)

    @staticmethod
    def _unpack(back: torch.Tensor, counts: np.ndarray, dims: np.ndarray, wanted: list[_Wanted]) -> list[torch.Tensor]:
        """The rows each owner sent (per owner, per table, flattened) as one tensor per table, in the
        order of its `unique` ids."""
        parts = _grid(back, (counts * dims[:, None]).T)                        # [owner][table]
        rows = []
        for t, want in enumerate(wanted):
            mine = torch.cat([torch.zeros(0, device=back.device)] + [part[t] for part in parts])
            ordered = mine.reshape(-1, int(dims[t]))
            unique_rows = torch.empty_like(ordered)
            unique_rows[torch.from_numpy(want.order).to(back.device)] = ordered
            rows.append(unique_rows)
        return rows

    def served_gradients(self) -> list[torch.Tensor | None]:
        return [] if self._step is None else [rows.grad for rows in self._step.rows]

    def discard_gradients(self) -> None:
        """Forget the step: nothing is sent, or what was received is not applied."""
        self._step, self._received = None, None

    def send_gradients(self, extra: torch.Tensor) -> torch.Tensor:
        """Step 4's all-to-all: every row's gradient to its owner, and `extra` (a float32 vector of the
        same length on every rank, e.g. the dense gradients) to every rank; returns every rank's
        `extra` stacked by rank `[world, len(extra)]`. The gradients received wait for
        `apply_received` (or `discard_gradients`)."""
        step, g = self._step, self.group
        dims = np.array([t.config.dim for t in self.tables.values()])
        counts = np.stack([w.counts for w in step.wanted])
        grads = []                                                             # [table][owner]
        for want, rows in zip(step.wanted, step.rows):
            grad = rows.grad if rows.grad is not None else torch.zeros_like(rows)
            ordered = grad[torch.from_numpy(want.order).to(grad.device)].detach()
            grads.append([part.reshape(-1) for part in torch.split(ordered, want.counts.tolist())])
        extra = extra.detach().to(g.device, torch.float32).reshape(-1)
        send = torch.cat([torch.zeros(0, device=g.device)]
                         + [part for d in range(g.world) for part in [*(t[d] for t in grads), extra]])
        sizes = (step.received * dims).sum(axis=1)
        got = g.all_to_all(send, ((counts * dims[:, None]).sum(axis=0) + len(extra)).tolist(),
                           (sizes + len(extra)).tolist())
        blocks = torch.split(got, (sizes + len(extra)).tolist())
        self._received = [block[: sizes[r]] for r, block in enumerate(blocks)]
        return torch.stack([block[sizes[r]:] for r, block in enumerate(blocks)])

    def apply_received(self, events: int = 1) -> None:
        """The owner's step: the gradients `send_gradients` brought for this rank's rows (an id's
        from several ranks summed), for a loss averaged over `events` events."""
        step, received = self._step, self._received
        self._step, self._received = None, None
        tables = list(self.tables.values())
        dims = [t.config.dim for t in tables]
        received = [torch.split(block, (step.received[r] * np.array(dims)).tolist())   # [rank][table]
                    for r, block in enumerate(received)]
        for t, table in enumerate(tables):
            mine = torch.cat([torch.zeros(0, device=self.group.device)] + [part[t] for part in received])
            if len(step.slots[t]):
                table.apply_gradients(step.slots[t], mine.reshape(-1, dims[t]), events=events)

    def apply_gradients(self, events: int = 1) -> None:
        """Step 4 with nothing riding along: `send_gradients`, then `apply_received`."""
        self.send_gradients(torch.zeros(0))
        self.apply_received(events)


def shard_model(model: nn.Module, group: Group) -> nn.Module:
    """Make `model`'s tables this rank's shards of `group`'s (in place); returns the model."""
    if not isinstance(model.embeddings, ShardedCollection):
        model.embeddings = ShardedCollection(model.embeddings, group)
    return model
