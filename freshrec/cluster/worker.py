"""One rank of `freshrec run --workers N` (or of `torchrun ... -m freshrec.cli run`): joins the group,
runs its `GroupEngine` over its share of the stream and, on rank 0, writes the group's figures to
`STATE/figures.json` (what `freshrec run` prints). A run on GPUs puts each rank on its own
(`cuda:LOCAL_RANK`, NCCL between them: `Group.join`), its shards' rows and the model with it.

A worker has no signal handler of its own: SIGTERM or SIGKILL ends it at once, the launcher
(torchrun) stops the others and restarts the group, which continues from the last committed cut
(`GroupEngine.restore`): nothing is lost and nothing learned twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from freshrec.cluster.cuts import rank_root
from freshrec.cluster.engine import GroupEngine
from freshrec.cluster.group import Group
from freshrec.cluster.kafka_share import KafkaFollower, KafkaLeader
from freshrec.cluster.partition import Discarded, RankShare
from freshrec.config import FreshrecConfig
from freshrec.config.sections import KafkaSection
from freshrec.engine.build import (
    engine_config,
    feature_specs,
    kafka_source,
    model_config,
    open_stream,
    resolve_data,
    worker_device,
)
from freshrec.events.deadletter import JsonlDeadLetters
from freshrec.events.event import Field
from freshrec.events.source import Source
from freshrec.models import build_model

__all__ = ["FIGURES", "run_rank"]

FIGURES = "figures.json"


def run_rank(config: FreshrecConfig, state: Path) -> dict:
    """Run this process's rank to the end of the stream; returns its figures (rank 0: the group's,
    also written to `STATE/figures.json`)."""
    group = Group.join(device=worker_device(config, int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()))
    try:
        config, _ = resolve_data(config)
        root = rank_root(state, group.rank)
        root.mkdir(parents=True, exist_ok=True)
        (root / "pid").write_text(str(os.getpid()))
        letters = JsonlDeadLetters(state / "dead_letters.jsonl") if group.rank == 0 else Discarded()
        t = config.training
        source = RankShare(open_stream(config, letters, kafka=lambda kafka, fields: _kafka(kafka, fields, group)),
                           group.rank, group.world, t.online_batch_size, t.online_batch_window)
        specs = feature_specs(config, source.fields)
        settings = model_config(config)
        engine = GroupEngine(source, specs, lambda: build_model(config.model.name, specs, settings), state,
                             engine_config(config), group)
        engine.restore()
        try:
            own = engine.run()
        finally:
            source.close()
            if group.rank == 0:
                letters.close()
        figures = engine.trainer.group_figures()
        every = group.objects({"learned": own["learned"], "rows": own["rows"], "seconds": own["seconds"],
                               **group.cost(), "rows_asked": engine.trainer.collection.rows_sent,
                               "steps": engine.trainer.group_steps})
        figures.update(_totals(own, every, group.world))
        if group.rank == 0:
            figures["dead_letters"] = letters.total
            (state / FIGURES).write_text(json.dumps(figures, default=str))
        return figures
    finally:
        group.leave()


def _kafka(kafka: KafkaSection, fields: Sequence[Field], group: Group) -> Source:
    """Rank 0 consumes the topic in the consumer group, the others read what it outlines (`kafka_share`)."""
    if group.rank == 0:
        return kafka_source(kafka, fields, kind=KafkaLeader, store=group.store)
    follower = kafka.model_copy(update={"group": f"{kafka.group}.rank-{group.rank}"})   # never commits
    return kafka_source(follower, fields, Discarded(), kind=KafkaFollower, store=group.store)


def _totals(own: dict, every: list[dict], world: int) -> dict:
    """The group's counters from each rank's (`every`) and this rank's figures (`own`)."""
    seconds = max(r["seconds"] for r in every)
    rows = sum(r["rows"] for r in every)
    asked = sum(r["rows_asked"] for r in every)
    return {"workers": world, "events": own["events"], "learned": sum(r["learned"] for r in every), "rows": rows,
            "seconds": seconds, "rows_per_s": rows / seconds if seconds else None,
            "checkpoints": own["checkpoints"], "restored_from": own["restored_from"],
            "bytes_per_row_asked": sum(r["bytes_sent"] for r in every) / asked if asked else None,
            "collective_seconds": max(r["collective_seconds"] for r in every), "group_steps": every[0]["steps"],
            "rows_asked_per_row": asked / rows if rows else None,
            "per_rank": [{k: r[k] for k in ("learned", "rows_asked", "bytes_sent", "collective_seconds")}
                         for r in every]}
