"""`GroupEngine`: one rank's `DataFlowEngine` in a group, its checkpoints one consistent cut of all.

Each rank runs the one loop over its share of the stream (`RankShare`: a step of the group learns
the events of one process's micro-batch) with a `GroupTrainer`; its log and checkpoints live under
`STATE/rank-R`. The loop cuts every rank's stream after the same chunk
(the chunks line up), and at a cut each rank checkpoints its shards, the dense weights (equal on
every rank), the optimizer state and the source position; after all have (a collective), rank 0
commits the cut (`cuts.write_cut`), and only then does any rank commit its source position.

`restore()` continues from the newest committed cut: with the same world size each rank loads its
own checkpoint; with another (`reshard`) each rank loads every old shard and keeps the rows it now
owns, optimizer state included. Each rank's log is rolled back to its mark at the cut (rank 0 also
rolls back the logs of ranks that are gone), so every event is in the group's logs once.

After each chunk the ranks publish their parts of a version together, when any is due
(`GroupPublisher`), to `STATE/registry`, where a server finds the whole model's versions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from freshrec.cluster.cuts import latest_cut, rank_root, write_cut
from freshrec.cluster.group import Group
from freshrec.cluster.publish import GroupPublisher
from freshrec.cluster.reshard import merged_table_state, replace_tables
from freshrec.cluster.trainer import GroupTrainer
from freshrec.embedding import DynamicEmbedding
from freshrec.engine.checkpoint import Checkpoint, CheckpointStore
from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
from freshrec.engine.loop import Cut
from freshrec.events.source import Source
from freshrec.features import FeatureSpec
from freshrec.log import EventLog
from freshrec.models.base import OnlineModel
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer, TrainerConfig

__all__ = ["SEED_STRIDE", "GroupEngine", "assemble"]

log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003   # rank r's shards draw new rows from seed + r * SEED_STRIDE


class GroupEngine(DataFlowEngine):
    """Rank `group.rank`'s engine over `source` (its share of the stream); the group's state under `state`."""

    def __init__(self, source: Source, specs: Sequence[FeatureSpec], build: Callable[[], OnlineModel],
                 state: str | Path, config: EngineConfig, group: Group) -> None:
        on_device = dataclasses.replace(config.trainer, device=str(group.device))   # checkpoints load there too
        super().__init__(source, specs, build, rank_root(Path(state), group.rank),
                         dataclasses.replace(config, share=None, trainer=on_device))
        self.state, self.group = Path(state), group
        self.registry = ModelRegistry(self.state / "registry", part=(group.rank, group.world))

    def restore(self) -> int | None:
        """Continue from the newest committed cut (resharding when the world size changed), or start
        afresh; returns the cut's step or None."""
        cut = latest_cut(self.state)
        step = cut["step"] if cut is not None else 0
        logs = cut["logs"] if cut is not None else {}
        self.checkpoints.drop_after(step)
        if self.group.rank == 0:
            self._roll_back_gone_ranks(logs, step)
        self.log.rollback(int(logs.get(str(self.group.rank), 0)))
        if cut is None:
            self.trainer = GroupTrainer(self._fresh_model(), self.config.trainer, self.group)
            return None
        if cut["world"] == self.group.world:
            restored = self.checkpoints.load(step, self.config.trainer).trainer
        else:
            restored = self._resharded(cut)
        self.trainer = GroupTrainer.adopt(restored, self.group)
        self.source.seek(cut["position"])
        self.step, self.events = step, int(cut["events"])
        if self.group.rank == 0:   # the group's counters: the sums over the ranks add up
            self.logged, self.learned = int(cut["logged"]), int(cut["learned"])
        self.restored_from = step
        return step

    def _fresh_model(self) -> OnlineModel:
        model = self.build()
        for table in model.tables.values():
            table.reseed(table.config.seed + self.group.rank * SEED_STRIDE)
        return model

    def _roll_back_gone_ranks(self, logs: dict, step: int) -> None:
        """The logs (and checkpoints) of ranks beyond this world: back to their marks at the cut."""
        for folder in sorted(self.state.glob("rank-*")):
            rank = int(folder.name.removeprefix("rank-"))
            if rank < self.group.world:
                continue
            CheckpointStore(folder / "checkpoints").drop_after(step)
            if (folder / "log").is_dir():
                gone = EventLog(folder / "log", self.source.fields)
                gone.rollback(int(logs.get(str(rank), 0)))
                gone.close()

    def _resharded(self, cut: dict) -> OnlineTrainer:
        """The trainer of the old rank 0 at `cut` with its tables replaced by the rows this rank owns
        in the new world, from every old rank's checkpoint."""
        fresh = self._fresh_model().tables if self.group.rank >= cut["world"] else None
        trainer = _merged(self.state, cut, self.group.rank, self.group.world, self.config.trainer, fresh)
        log.info("rank %d: resharded step %d from %d to %d ranks (%d ids here)", self.group.rank, cut["step"],
                 cut["world"], self.group.world, trainer.model.live_ids)
        return trainer

    def _publisher(self) -> GroupPublisher:
        return GroupPublisher(self.registry, self.trainer.model, self.source.fields, self.group, self.config.sync,
                              writes=self.writes)

    def _publish(self, held: bool) -> None:
        """Every rank votes after every chunk (each is held: `GroupTrainer.learn_stream`)."""
        self.publisher.maybe_publish()

    def checkpoint(self, cut: Cut, log_mark: Callable[[], int | None]) -> None:
        """Checkpoint this rank at the cut (written now, not behind), then commit the group's cut
        once every rank has, then the source position. Skipped on every rank when one rank's log
        could not be made durable up to the cut."""
        mark = log_mark()
        failed = self.group.max_(torch.tensor([float(mark is None)]))
        if failed.item():
            log.warning("no checkpoint: a rank's event log could not be made durable up to the cut")
            return
        self.step += 1
        meta = {"events": self.events, "logged": self.logged, "learned": self.learned, "log": mark}
        self.checkpoints.save(Checkpoint(self.step, cut.position, self.trainer, meta))
        ranks = self.group.objects((mark, self.logged, self.learned))   # after every rank's checkpoint is durable
        if self.group.rank == 0:
            previous = latest_cut(self.state)
            logs = dict(previous["logs"]) if previous is not None else {}
            logs.update({str(rank): value[0] for rank, value in enumerate(ranks)})
            write_cut(self.state, {"step": self.step, "world": self.group.world, "position": cut.position,
                                   "events": self.events, "logs": logs, "logged": sum(r[1] for r in ranks),
                                   "learned": sum(r[2] for r in ranks)})
        self.group.barrier()
        self.source.commit(cut.position)


def _merged(state: Path, cut: dict, rank: int, world: int, placement: TrainerConfig | None,
            fresh: dict[str, DynamicEmbedding] | None = None) -> OnlineTrainer:
    """The trainer of rank 0 at `cut` holding the rows `rank` owns in a group of `world`, from every
    rank's checkpoint of the cut; `fresh`: tables whose generators a rank new to the group draws from."""
    shards = [CheckpointStore(rank_root(state, old) / "checkpoints").load(cut["step"], placement, False).trainer
              for old in range(cut["world"])]
    base = shards[0]
    states = {}
    for name in base.model.tables:
        generator = fresh[name].resume_state()["generator"] if fresh is not None else None
        states[name] = merged_table_state([shard.model.tables[name].state_dict() for shard in shards],
                                          rank, world, generator)
    replace_tables(base.model.embeddings.tables, states)
    return base


def assemble(state: str | Path, placement: TrainerConfig | None = None) -> OnlineTrainer:
    """The whole model of the group's newest committed cut in one trainer (every shard's rows, the
    dense weights and their optimizer state): to score, to serve or to compare. FileNotFoundError
    when the group has committed no cut yet."""
    cut = latest_cut(Path(state))
    if cut is None:
        raise FileNotFoundError(f"{state}: no committed cut of a worker group")
    return _merged(Path(state), cut, 0, 1, placement)
