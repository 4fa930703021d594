"""Checks every model in `freshrec.models.MODELS` must pass, trained through `OnlineTrainer`
(River's `check_estimator`, TorchRec's module checks).

Each check builds the model by its registered name over a small simulated stream and raises
`AssertionError` saying what broke (a model that cannot take the stream at all raises its own
error). A new model is covered by adding it to `MODELS`.

- `learn` and `predict` leave every tensor of their batch as it was;
- ids never seen before work mid-stream: `predict` scores them without inserting rows, `learn`
  creates their rows;
- a snapshot round trip, and a snapshot plus a delta, give bit-identical predictions;
- the same seed gives the same run, bit for bit.

>>> check_model("lr")
['learn_keeps_its_batch', 'unseen_ids', 'snapshot_round_trip', 'same_seed_same_run']
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from freshrec.batch import Batch
from freshrec.events.event import EventChunk
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, FeatureSpec, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.models.base import probabilities
from freshrec.snapshot import Delta, Snapshot, table_versions
from freshrec.train import OnlineTrainer, TrainerConfig

__all__ = ["Stream", "check_learn_keeps_its_batch", "check_model", "check_same_seed_same_run",
           "check_snapshot_round_trip", "check_unseen_ids", "stream"]

UNSEEN = 10**12  # added to every raw id: values the simulator never draws


@dataclass(frozen=True)
class Stream:
    """A small featurised stream: its `specs`, its `batches` in order, and `unseen`, the last
    batch's rows with every sparse value shifted to ids the stream never had."""

    specs: tuple[FeatureSpec, ...]
    batches: list[Batch]
    unseen: Batch


def stream(rows: int = 512, batch_size: int = 64, seed: int = 0) -> Stream:
    """The simulator's first `rows` events in batches of `batch_size` (embeddings of width 4)."""
    simulator = Simulator(SimulatorConfig(batch_size=batch_size, total_events=rows, seed=seed))
    specs = tuple(default_specs(simulator.fields, dim=4))
    pipeline = FeaturePipeline(specs)
    chunks = list(simulator)
    table = chunks[-1].table
    for spec in specs:
        if spec.is_sparse:  # the simulator's sparse columns are int64
            table = table.set_column(table.column_names.index(spec.name), spec.name,
                                     pc.add(table.column(spec.name), UNSEEN))
    unseen = EventChunk(table, chunks[-1].positions, chunks[-1].source, chunks[-1].kind)
    return Stream(specs, [pipeline.build(c) for c in chunks], pipeline.build(unseen))


def _trainer(name: str, specs: Sequence[FeatureSpec], config: TrainerConfig | None, seed: int = 0) -> OnlineTrainer:
    return OnlineTrainer(build_model(name, specs, ModelConfig(dim=4, seed=seed)), config)


def _learn(name: str, trainer: OnlineTrainer, batch: Batch) -> torch.Tensor:
    """`trainer.learn(batch)`'s predictions; a skipped batch (non-finite loss) fails the check."""
    step = trainer.learn(batch)
    assert not step["skipped"], f"{name}: learn skipped a batch of the simulated stream (loss {step['loss']})"
    return step["predictions"]


def _tensors(batch: Batch) -> dict[str, torch.Tensor]:
    tensors = {"sparse.values": batch.sparse.values(), "sparse.lengths": batch.sparse.lengths(),
               "dense": batch.dense, "labels": batch.labels, "ts": batch.ts}
    if batch.targets is not None:
        tensors["targets"] = batch.targets
    return {key: tensor.clone() for key, tensor in tensors.items()}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so NaN equals NaN)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


def check_learn_keeps_its_batch(name: str, config: TrainerConfig | None = None) -> None:
    """`learn` and `predict` change no tensor of the batch they are given."""
    data = stream()
    trainer = _trainer(name, data.specs, config)
    for batch in [*data.batches[:3], data.unseen]:
        for verb in ("learn", "predict"):
            before = _tensors(batch)
            getattr(trainer, verb)(batch)
            changed = [key for key, tensor in _tensors(batch).items() if not _same_bits(before[key], tensor)]
            assert not changed, f"{name}: {verb} changed its batch's {', '.join(changed)}"


def check_unseen_ids(name: str, config: TrainerConfig | None = None) -> None:
    """After a stream, ids never seen are scored (finite, no rows inserted), then learned (rows made)."""
    data = stream()
    trainer = _trainer(name, data.specs, config)
    for batch in data.batches:
        _learn(name, trainer, batch)
    live = trainer.model.live_ids
    scores = trainer.predict(data.unseen)
    assert scores.shape == (len(data.unseen),) and bool(torch.isfinite(scores).all()), \
        f"{name}: predict gave {scores.shape} scores, not {len(data.unseen)} finite ones, for unseen ids"
    assert trainer.model.live_ids == live, f"{name}: predict inserted {trainer.model.live_ids - live} rows"
    learned = _learn(name, trainer, data.unseen)
    assert bool(torch.isfinite(learned).all()), f"{name}: learn scored unseen ids with non-finite values"
    assert trainer.model.live_ids > live, f"{name}: learning unseen ids created no rows"


def check_snapshot_round_trip(name: str, config: TrainerConfig | None = None) -> None:
    """A snapshot saved and loaded, and an older snapshot plus a delta, predict exactly as the model."""
    data = stream()
    trainer = _trainer(name, data.specs, config)
    half = len(data.batches) // 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for batch in data.batches[:half]:
            _learn(name, trainer, batch)
        Snapshot(trainer.model, version=1).save(root / "first")
        since = table_versions(trainer.model)
        for batch in data.batches[half:]:
            _learn(name, trainer, batch)
        Delta.capture(trainer.model, since=1, version=2, table_since=since).save(root / "delta")
        Snapshot(trainer.model, version=2).save(root / "last")
        replica = Snapshot.load(root / "first").model
        Delta.load(root / "delta").apply(replica)
        copies = {"snapshot": Snapshot.load(root / "last").model, "snapshot + delta": replica}
    for batch in [*data.batches, data.unseen]:
        expected = probabilities(trainer.model, batch)
        for how, copy in copies.items():
            differ = int((probabilities(copy, batch) != expected).sum())
            assert not differ, f"{name}: after a {how} round trip {differ} of {len(batch)} predictions differ"


def check_same_seed_same_run(name: str, config: TrainerConfig | None = None) -> None:
    """Two runs with the same seeds over the same stream score every batch the same, bit for bit."""
    runs = []
    for _ in range(2):
        data = stream()
        trainer = _trainer(name, data.specs, config, seed=7)
        scores = [_learn(name, trainer, batch) for batch in data.batches]
        runs.append(np.concatenate([*(s.numpy() for s in scores), trainer.predict(data.unseen).numpy()]))
    differ = int((runs[0] != runs[1]).sum())
    assert not differ, f"{name}: two runs with the same seed differ in {differ} of {len(runs[0])} scores"


CHECKS = {"learn_keeps_its_batch": check_learn_keeps_its_batch, "unseen_ids": check_unseen_ids,
          "snapshot_round_trip": check_snapshot_round_trip, "same_seed_same_run": check_same_seed_same_run}


def check_model(name: str, config: TrainerConfig | None = None) -> list[str]:
    """Run every check on the registered model `name` (trained with `config`); returns their names."""
    for check in CHECKS.values():
        check(name, config)
    return list(CHECKS)
