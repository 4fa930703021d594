"""A `RetrievalLearner`'s state as plain files, so that a restored run learns on exactly as an uninterrupted
one: the two-tower (a `Snapshot`), its dense optimizer's state, the item frequency estimate (the slots seen),
the catalogue (keys in order of arrival and their content), the users' recent and consumed items, and the
negative sampler's random state. `capture_learner` copies it now and returns the function that writes it
later (from the checkpoint writer's thread); `load_learner` rebuilds the learner. No pickle anywhere.

>>> import tempfile, pathlib, torch
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.models.two_tower import TwoTowerConfig
>>> sim = Simulator(SimulatorConfig(total_events=900, batch_size=300, n_users=20, n_items=30))
>>> first, second, third = (c.table for c in sim)
>>> learner = RetrievalLearner.build(sim.fields, history=5, model=TwoTowerConfig(dim=8, out_dim=8))
>>> _ = learner.learn(first, batch_size=100)
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> capture_learner(learner)(folder)
>>> copy = load_learner(folder, None, history=5)
>>> _ = learner.learn(second, batch_size=100), copy.learn(second, batch_size=100)
>>> probe = learner.batch(third)
>>> bool(torch.equal(learner.model(probe), copy.model(probe)))
True
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from freshrec.engine.trainer_state import optimizer_state, optimizer_tensors
from freshrec.features.content import ItemContent
from freshrec.snapshot import Snapshot
from freshrec.train.retrieval import Catalogue, RetrievalConfig, RetrievalLearner

__all__ = ["capture_learner", "load_learner"]

MODEL, ARRAYS, OPTIMIZER, USERS, RECORD = "model", "arrays.safetensors", "optimizer.safetensors", "users.arrow", \
    "learner.json"


def capture_learner(learner: RetrievalLearner) -> Callable[[Path], None]:
    """Everything `load_learner` needs, copied now; the returned function writes it into a directory."""
    trainer, frequency = learner.trainer, learner.trainer.frequency
    model = Snapshot(learner.model, version=trainer.steps).capture()
    tensors, rest = optimizer_tensors(trainer.optimizer.state_dict())
    slots = np.flatnonzero(frequency.last)
    arrays = {"catalogue.keys": trainer.catalogue.keys.copy(), "catalogue.content": trainer.catalogue.content.copy(),
              "frequency.slots": slots, "frequency.last": frequency.last[slots],
              "frequency.gap": frequency.gap[slots]}
    users = list(learner.recent)
    table = pa.table({"user": pa.array(users),
                      "recent": pa.array([list(learner.recent[u]) for u in users]),
                      "consumed": pa.array([sorted(learner.consumed[u]) for u in users], pa.list_(pa.int64()))})
    record = json.dumps({"steps": trainer.steps, "rng": trainer.rng.bit_generator.state, "optimizer": rest,
                         "frequency_buckets": frequency.buckets})

    def write(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        model(directory / MODEL)
        save_file(tensors, str(directory / OPTIMIZER))
        save_numpy(arrays, str(directory / ARRAYS))
        with pa.OSFile(str(directory / USERS), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        (directory / RECORD).write_text(record)
    return write


def load_learner(directory: str | Path, content: ItemContent | None, history: int,
                 training: RetrievalConfig | None = None) -> RetrievalLearner:
    """The learner `capture_learner` wrote, with this run's `content`, `history` and `training` settings;
    ValueError when the saved frequency estimate has another number of buckets than `training`'s."""
    directory = Path(directory)
    record = json.loads((directory / RECORD).read_text())
    learner = RetrievalLearner(Snapshot.load(directory / MODEL).model.train(), content, history, training)
    trainer, frequency = learner.trainer, learner.trainer.frequency
    if record["frequency_buckets"] != frequency.buckets:
        raise ValueError(f"{directory}: the saved item frequencies have {record['frequency_buckets']} buckets, "
                         f"this run {frequency.buckets}")
    arrays = load_numpy(str(directory / ARRAYS))
    trainer.catalogue = Catalogue.of(arrays["catalogue.keys"], arrays["catalogue.content"])
    frequency.last[arrays["frequency.slots"]] = arrays["frequency.last"]
    frequency.gap[arrays["frequency.slots"]] = arrays["frequency.gap"]
    trainer.steps = int(record["steps"])
    trainer.rng.bit_generator.state = record["rng"]
    trainer.optimizer.load_state_dict(optimizer_state(load_file(str(directory / OPTIMIZER)), record["optimizer"]))
    with pa.memory_map(str(directory / USERS)) as source:
        users = pa.ipc.open_file(source).read_all()
    for user, recent, consumed in zip(*(users.column(c).to_pylist() for c in ("user", "recent", "consumed"))):
        learner.recent[user] = deque(recent, maxlen=max(history, 1))
        learner.consumed[user] = set(consumed)
    return learner

