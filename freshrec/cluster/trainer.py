"""`GroupTrainer`: predict-then-learn on every rank of a `Group` at once (data parallel, sharded tables).

Each rank learns its share of the stream in the same units (the loop's chunks) as the others: at
each unit the ranks agree on how many micro-batch steps it takes (the most any rank has; a rank
with fewer takes part in the rest with no batch), and each step is one synchronous step of the
group: rows fetched from their owners (`ShardedCollection`), the rank's batch scored (prequential)
and backpropagated with its loss weighted by its share of the step's labelled events, then one
all-to-all takes the rows' gradients to their owners and every rank's dense gradients to every rank,
where they are summed in rank order (every rank takes the same dense step: the weights stay equal).
A step is the step one process would take on the union of the ranks' micro-batches. A step whose
gradients are not finite on any rank is skipped by all. The prequential metrics of the ranks add
up (`group_figures`). `predict` is a collective too (the rows come from their owners): every rank
calls it, or none.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.cluster.group import Group
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models import OnlineFM
>>> from freshrec.train.online import Unit
>>> trainer = GroupTrainer(OnlineFM([FeatureSpec("user_id", FieldKind.CATEGORICAL)]), group=Group.alone())
>>> batch = Batch(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)),
...               dense=torch.zeros(2, 0), labels=torch.tensor([1.0, 0.0]), ts=torch.zeros(2, dtype=torch.float64))
>>> [len(steps) for _, steps, _ in trainer.learn_stream([Unit(batch, [1, 1]), Unit(batch, [2])])]
[2, 1]
>>> figures = trainer.group_figures(); figures["scored_rows"], figures["live_ids"]
(4, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from freshrec.batch import Batch
from freshrec.cluster.group import Group
from freshrec.cluster.sharded import ShardedCollection, shard_model
from freshrec.metrics.streaming import Tally
from freshrec.models.base import OnlineModel
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.online import LOOKAHEAD_UNITS, MicroBatched

__all__ = ["GroupTrainer"]


def _micro_batches(unit: MicroBatched) -> list[Batch | None]:
    """The unit's micro-batches, None for those of size 0 (a step of the group with none of this
    rank's rows: `RankShare`)."""
    sizes = [int(size) for size in unit.sizes]
    if unit.whole is None or all(sizes):
        return list(unit.batches)
    parts = iter(unit.whole.split([size for size in sizes if size]))
    return [next(parts) if size else None for size in sizes]


def _rank_config(config: TrainerConfig, group: Group) -> TrainerConfig:
    """`config` for a rank of `group`: the module's step (not the fused one), on the group's device."""
    return dataclasses.replace(config, fused=False, device=str(group.device))


class GroupTrainer(OnlineTrainer):
    """An `OnlineTrainer` for one rank of `group`: its model's tables become this rank's shards; the
    step is the module's (autograd), never the fused one (whose lookups are local). The rank learns
    on the group's device (`Group.device`: its GPU, or the CPU), whatever `config.device` says."""

    def __init__(self, model: OnlineModel, config: TrainerConfig | None = None, group: Group | None = None) -> None:
        group = group or Group.alone()
        super().__init__(shard_model(model, group), _rank_config(config or TrainerConfig(), group))
        self.group = group
        self.group_steps = 0         # steps taken with the group (with or without a batch of this rank)

    @classmethod
    def adopt(cls, trainer: OnlineTrainer, group: Group) -> GroupTrainer:
        """`trainer` (e.g. restored from a checkpoint, placed on `group.device`) as a rank of
        `group`, its state kept."""
        if trainer.model.device != group.device:
            raise ValueError(f"the trainer learns on {trainer.model.device}, the group's rank on {group.device}: "
                             "restore it with the group's device as its placement")
        adopted = cls.__new__(cls)
        adopted.__dict__.update(trainer.__dict__)
        adopted.config = _rank_config(trainer.config, group)
        adopted.group, adopted.group_steps = group, 0
        shard_model(adopted.model, group)
        return adopted

    @property
    def collection(self) -> ShardedCollection:
        return self.model.embeddings

    def learn_stream(self, units: Iterable[MicroBatched], ahead: int = LOOKAHEAD_UNITS
                     ) -> Iterator[tuple[MicroBatched, list[dict], bool]]:
        """Learn the units with the other ranks (see the module docstring); each unit is yielded
        held. Ends when every rank's units have ended."""
        if self.batches == 0 and self._optimizer is None:
            self.start()
        units = iter(units)
        while True:
            unit = next(units, None)
            batches = _micro_batches(unit) if unit is not None else []
            plan = self.group.max_(torch.tensor([len(batches), unit is not None], dtype=torch.int64))
            if not plan[1]:
                return
            steps = [self._step(batches[i] if i < len(batches) else None) for i in range(int(plan[0]))]
            self.group_steps += int(plan[0])
            if unit is not None:
                self._evict_when_due(unit)
                yield unit, [step for step in steps if step is not None], True

    def _step(self, batch: Batch | None) -> dict | None:
        """One group step with this rank's `batch` (None: none); a batch that fails its check is
        reported failed and the rank takes part without it."""
        if batch is not None:
            try:
                self.check(batch)
            except Exception as error:
                self._idle()
                return self._fail(batch, error)
            self.batches += 1
            return self._learn_with_group(batch)
        self._idle()
        return None

    def _learn_with_group(self, batch: Batch) -> dict:
        labelled = int((~torch.isnan(batch.labels)).sum())
        self.collection.events = labelled
        self.model.zero_grad(set_to_none=True)
        output, value = self._forward(self._feed.one(batch))
        events = max(self.collection.global_events, 1)
        (value * (labelled / events)).backward()
        if not self._exchange_gradients():
            return self._skip(batch, float(value.detach()))
        self._step_dense()
        self.collection.apply_received(events)
        predictions = self._score(output.detach().float()).cpu()
        self._record(predictions.numpy(), batch.labels.numpy(), batch.ts.numpy())
        return {"rows": len(batch), "batches": 1, "loss": float(value.detach()), "skipped": 0,
                "predictions": predictions}

    def _idle(self) -> None:
        """A step without a batch: serve the rows asked for, add nothing to the dense gradients, take
        the group's dense step and apply the gradients sent for this rank's rows."""
        self.model.zero_grad(set_to_none=True)
        self.collection.idle_lookup()
        if self._exchange_gradients():
            self._step_dense()
            self.collection.apply_received(max(self.collection.global_events, 1))

    def _exchange_gradients(self) -> bool:
        """The rows' gradients to their owners, this rank's dense gradients to every rank (one
        all-to-all), with a sum of the rows' gradients riding along so that a non-finite gradient
        anywhere is seen everywhere; the dense gradients summed over the ranks in rank order (the
        same sum on every rank). False: not finite, the step is dropped on every rank."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        rows = [g.sum() for g in self.collection.served_gradients() if g is not None]
        check = torch.stack(rows).sum().reshape(1) if rows else torch.zeros(1, device=self.group.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
                         + [check.detach().float()])
        total = self.collection.send_gradients(flat).sum(dim=0)
        if not bool(torch.isfinite(total).all()):
            self.collection.discard_gradients()
            return False
        for p, part in zip(params, torch.split(total[:-1], [p.numel() for p in params])):
            p.grad = part.reshape(p.shape).to(p.dtype)
        return True

    def group_figures(self) -> dict:
        """The prequential figures of every rank's rows together (the ranks' tallies summed), the
        live ids of every shard and this rank's own figures (`rank`); a collective."""
        tally = self.metrics.total
        summed = self.group.sum_(torch.from_numpy(np.concatenate([tally.counts.ravel().astype(np.float64),
                                                                  [tally.pred, tally.loss, self.model.live_ids,
                                                                   self.skipped_batches, self.failed_batches]])))
        values = summed.numpy()
        bins = tally.counts.size
        counts = values[:bins].reshape(tally.counts.shape).astype(np.int64)
        report = Tally(counts, values[bins], values[bins + 1]).report()
        report["scored_rows"] = report.pop("rows")
        return {**report, "live_ids": int(values[bins + 2]), "skipped_batches": int(values[bins + 3]),
                "failed_batches": int(values[bins + 4]), "rank": self.report()}
