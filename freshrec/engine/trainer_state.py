"""A trainer's state as plain files: `save_trainer(trainer, directory)` writes the model (a
`Snapshot`: dense weights, tables with their row optimizer state and generators), the dense
optimizer's state (`optimizer.safetensors` + `trainer.json`) and torch's random state; a later
`load_trainer(directory)` continues exactly where it stopped: the same next update, bit for bit.
No pickle anywhere.

>>> import tempfile
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=200, total_events=600))
>>> specs = default_specs(sim.fields, dim=4)
>>> batches = [FeaturePipeline(specs).build(c) for c in sim]
>>> trainer = OnlineTrainer(build_model("deepfm", specs))
>>> _ = trainer.learn(batches[0])
>>> tmp = tempfile.mkdtemp()
>>> save_trainer(trainer, tmp)
>>> copy = load_trainer(tmp)
>>> a, b = trainer.learn(batches[1])["predictions"], copy.learn(batches[1])["predictions"]
>>> bool(torch.equal(a, b)), bool(torch.equal(trainer.model(batches[2]), copy.model(batches[2])))
(True, True)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from freshrec.snapshot import Snapshot
from freshrec.train.online import OnlineTrainer, TrainerConfig

__all__ = ["load_trainer", "save_trainer"]

TRAINER, OPTIMIZER, RNG = "trainer.json", "optimizer.safetensors", "rng.safetensors"


def _optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and the JSON rest."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_trainer(trainer: OnlineTrainer, directory: str | Path) -> None:
    """Write everything `load_trainer` needs into `directory` (flat files)."""
    directory = Path(directory)
    Snapshot(trainer.model, version=trainer.batches).save(directory)
    optimizer = trainer.optimizer
    tensors, rest = _optimizer_tensors(optimizer.state_dict()) if optimizer else ({}, None)
    save_file(tensors, str(directory / OPTIMIZER))
    save_file({"torch": torch.get_rng_state()}, str(directory / RNG))
    counters = {"batches": trainer.batches, "skipped_batches": trainer.skipped_batches,
                "skipped_rows": trainer.skipped_rows, "squared_error": trainer.squared_error}
    (directory / TRAINER).write_text(json.dumps({"config": dataclasses.asdict(trainer.config),
                                                 "counters": counters, "optimizer": rest}))


def load_trainer(directory: str | Path) -> OnlineTrainer:
    """The trainer `save_trainer` wrote, ready to learn the next batch (its metrics start empty)."""
    directory = Path(directory)
    saved = json.loads((directory / TRAINER).read_text())
    trainer = OnlineTrainer(Snapshot.load(directory).model.train(), TrainerConfig(**saved["config"]))
    for name, value in saved["counters"].items():
        setattr(trainer, name, value)
    if saved["optimizer"] is not None:
        trainer.start()
        trainer.optimizer.load_state_dict(_optimizer_state(load_file(str(directory / OPTIMIZER)),
                                                           saved["optimizer"]))
    torch.set_rng_state(load_file(str(directory / RNG))["torch"])
    return trainer
