"""`RetrievalStage`: the loop's second model, an online two-tower retrieval model (`freshrec.train.retrieval`)
learning the interactions of every chunk right after the ranking model learned it, on the trainer's thread, so
that a checkpoint holds both at the same cut (the stage's state goes into the checkpoint's `retrieval/` folder:
`capture_learner`); published to its own registry with the same sync settings as the ranking model, where
`freshrec serve --retrieval` (and `freshrec run`'s server) follows it.

Each row of a chunk is an interaction (`positives="all"`: a rating, a view, a purchase: what a user chose), or
only its rows with a positive label are (`"labelled"`: a stream of impressions, where the clicks are the
choices).

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.models.two_tower import TwoTowerConfig
>>> from freshrec.train.retrieval import RetrievalLearner
>>> sim = Simulator(SimulatorConfig(total_events=1000, batch_size=500, n_users=20, n_items=30))
>>> learner = RetrievalLearner.build(sim.fields, history=5, model=TwoTowerConfig(dim=8, out_dim=8))
>>> stage = RetrievalStage(learner, positives="labelled", batch_size=100)
>>> chunks = list(sim)
>>> learned = [stage.learn(chunk) for chunk in chunks]
>>> report = stage.report()
>>> report["rows"] == sum(learned) == sum(int(c.table.column("label").to_numpy().sum()) for c in chunks)
True
>>> report["steps"], report["items"] <= 30   # a step per chunk: under 100 clicks in each
(2, True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from freshrec._durable import WriteBehind
from freshrec.engine.retrieval_state import capture_learner, load_learner
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.event import LABEL, EventChunk, Field
from freshrec.snapshot import ModelRegistry
from freshrec.train.retrieval import RetrievalLearner

__all__ = ["POSITIVES", "RetrievalStage"]

POSITIVES = ("all", "labelled")
log = logging.getLogger(__name__)


class RetrievalStage:
    """Learns `learner` from chunks of interactions (see the module docstring) in steps of `batch_size`."""

    def __init__(self, learner: RetrievalLearner, positives: str = "all", batch_size: int = 256) -> None:
        if positives not in POSITIVES:
            raise ValueError(f"positives must be one of {', '.join(POSITIVES)}, not {positives!r}")
        self.learner, self.positives, self.batch_size = learner, positives, batch_size
        self.publisher: Publisher | None = None
        self.rows = self.steps = self.failed = 0
        self.loss = float("nan")   # the mean loss of the last chunk's steps

    def learn(self, chunk: EventChunk) -> int:
        """Learn the chunk's interactions; returns how many rows were learned. A chunk the two-tower cannot learn
        is logged, counted (`failed`) and skipped: the ranking model has learned it and the loop goes on."""
        table = chunk.table
        if self.positives == "labelled":
            table = table.filter(pc.greater(table.column(LABEL), 0))
        if not table.num_rows:
            return 0
        try:
            steps = self.learner.learn(table, self.batch_size)
        except (ValueError, RuntimeError) as error:
            self.failed += table.num_rows
            log.warning("the two-tower could not learn %d rows of %s: %s", table.num_rows, chunk.source, error)
            return 0
        self.rows += table.num_rows
        self.steps += len(steps)
        self.loss = float(np.mean([step["loss"] for step in steps]))
        if self.publisher is not None:
            self.publisher.observe(chunk)
            self.publisher.maybe_publish()
        return table.num_rows

    def publish_to(self, registry: ModelRegistry, fields: Sequence[Field], sync: SyncConfig,
                   writes: WriteBehind | None = None) -> None:
        """Publish the two-tower to `registry` from now on, as `sync` says (deltas written behind by `writes`)."""
        self.publisher = Publisher(registry, self.learner.model, fields, replace(sync, keep_interactions=0),
                                   writes=writes)   # servers know the interactions from the ranking model

    def capture(self) -> Callable[[Path], None]:
        """The learner's state, copied now (`capture_learner`): the returned function writes it into a folder."""
        return capture_learner(self.learner)

    def restore(self, directory: Path) -> None:
        """Continue from the learner's state in `directory` (written by `capture`)."""
        learner = self.learner
        self.learner = load_learner(directory, learner.content, learner.history, learner.trainer.config)
        if self.publisher is not None:
            self.publisher.model = self.learner.model

    def close(self) -> None:
        """Publish what the servers do not have yet and wait for the writes behind."""
        if self.publisher is not None:
            self.publisher.close()

    def report(self) -> dict:
        """Rows and steps learned, rows failed, the last chunk's mean loss, the catalogue's items, versions
        published."""
        return {"rows": self.rows, "steps": self.steps, "failed": self.failed, "loss": self.loss,
                "items": len(self.learner.trainer.catalogue),
                "published": self.publisher.published if self.publisher is not None else None}
