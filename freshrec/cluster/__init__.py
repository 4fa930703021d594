"""Distributed online training on torch.distributed: tables sharded by id over a group of worker
processes (`ShardedCollection`), data-parallel steps (`GroupTrainer`), each rank's share of the stream
(`RankShare`), checkpoints that are one consistent cut of the group (`GroupEngine`), and restarts
with another world size that move each row to its new owner (`reshard`)."""

from freshrec.cluster.group import Group, in_launched_group
from freshrec.cluster.owners import owners
from freshrec.cluster.partition import RankShare
from freshrec.cluster.sharded import ShardedCollection, shard_model
from freshrec.cluster.trainer import GroupTrainer

__all__ = ["Group", "GroupTrainer", "RankShare", "ShardedCollection", "in_launched_group", "owners", "shard_model"]
