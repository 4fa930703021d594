"""A trainer's state as plain files: `save_trainer(trainer, directory)` writes the model (a
`Snapshot`: dense weights, tables with their row optimizer state and generators), the dense
optimizer's state (`optimizer.safetensors` + `trainer.json`), fp16's gradient scale and torch's
random state; a later `load_trainer(directory)` continues exactly where it stopped: the same next
update, bit for bit. No pickle anywhere.

Incremental: `save_trainer(trainer, directory, since=versions)` writes the tables as a `Delta` since
the table versions `versions` of an earlier save (every row written or sighted since, the ids
deleted) plus each table's resume state (sketch, generator, counters); `load_trainer(directory,
base)` loads the earlier save from `base(step)` and applies it. `capture_increment` copies what an
incremental save writes, so that the files can be written on another thread while the trainer learns.

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
>>> versions = table_versions(trainer.model)
>>> copy = load_trainer(tmp)
>>> a, b = trainer.learn(batches[1])["predictions"], copy.learn(batches[1])["predictions"]
>>> bool(torch.equal(a, b)), bool(torch.equal(trainer.model(batches[2]), copy.model(batches[2])))
(True, True)
>>> later = tempfile.mkdtemp()
>>> save_trainer(trainer, later, since=(1, versions))   # what changed since `tmp`
>>> again = load_trainer(later, base=lambda step: tmp)
>>> bool(torch.equal(trainer.learn(batches[2])["predictions"], again.learn(batches[2])["predictions"]))
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from freshrec.snapshot import Delta, Snapshot, table_versions
from freshrec.train.online import OnlineTrainer, TrainerConfig

__all__ = ["capture_increment", "load_trainer", "optimizer_state", "optimizer_tensors", "save_trainer",
           "table_versions"]

TRAINER, OPTIMIZER, RNG = "trainer.json", "optimizer.safetensors", "rng.safetensors"
RESUME = "tables_resume.safetensors"


def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and the JSON rest."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_trainer(trainer: OnlineTrainer, directory: str | Path,
                 since: tuple[int, dict[str, int]] | None = None) -> None:
    """Write everything `load_trainer` needs into `directory` (flat files); with `since` (the step
    and `table_versions` of an earlier save), only what changed after it (`capture_increment`)."""
    if since is not None:
        capture_increment(trainer, since)(Path(directory))
        return
    Snapshot(trainer.model, version=trainer.batches).save(Path(directory))
    _capture_rest(trainer, None)(Path(directory))


def capture_increment(trainer: OnlineTrainer, since: tuple[int, dict[str, int]]) -> Callable[[Path], None]:
    """What `save_trainer(trainer, directory, since)` writes, copied now: the returned function
    writes it into a directory later, from any thread, while the trainer goes on learning."""
    delta = Delta.capture(trainer.model, 0, trainer.batches, since[1])
    resume = {f"{name}/{key}": value for name, table in trainer.model.tables.items()
              for key, value in table.resume_state().items()}
    rest = _capture_rest(trainer, since[0])

    def write(directory: Path) -> None:
        delta.save(directory)
        save_numpy(resume, str(directory / RESUME))
        rest(directory)
    return write


def _capture_rest(trainer: OnlineTrainer, base: int | None) -> Callable[[Path], None]:
    """The dense optimizer's state, torch's random state and the trainer's record, copied now."""
    optimizer = trainer.optimizer
    tensors, rest = optimizer_tensors(optimizer.state_dict()) if optimizer else ({}, None)
    rng = torch.get_rng_state()
    counters = {"batches": trainer.batches, "skipped_batches": trainer.skipped_batches,
                "skipped_rows": trainer.skipped_rows, "squared_error": trainer.squared_error,
                "failed_batches": trainer.failed_batches, "rows_since_evict": trainer.rows_since_evict,
                "newest_ts": trainer.newest_ts}
    scaler = trainer.scaler.state_dict() if trainer.scaler is not None else None   # fp16: where its scale got to
    record = json.dumps({"config": dataclasses.asdict(trainer.config), "counters": counters, "optimizer": rest,
                         "scaler": scaler, "base": base})

    def write(directory: Path) -> None:
        save_file(tensors, str(directory / OPTIMIZER))
        save_file({"torch": rng}, str(directory / RNG))
        (directory / TRAINER).write_text(record)
    return write


def base_of(directory: str | Path) -> int | None:
    """The step of the save that the save in `directory` builds on (None: it is whole)."""
    return json.loads((Path(directory) / TRAINER).read_text()).get("base")


def load_trainer(directory: str | Path, base: Callable[[int], Path] | None = None,
                 placement: TrainerConfig | None = None) -> OnlineTrainer:
    """The trainer `save_trainer` wrote, ready to learn the next batch (its metrics start empty);
    `base(step)` is the directory of the earlier save an incremental one builds on; `placement`
    gives the device and precision to continue with (default: the saved ones)."""
    directory = Path(directory)
    saved = json.loads((directory / TRAINER).read_text())
    if saved.get("base") is None:
        model = Snapshot.load(directory).model.train()
    else:
        if base is None:
            raise ValueError(f"{directory} holds the changes since save {saved['base']}: pass `base`")
        model = load_trainer(base(saved["base"]), base, placement).model
        Delta.load(directory).apply(model)
        resume = load_numpy(str(directory / RESUME))
        for name, table in model.tables.items():
            table.load_resume_state({k.split("/", 1)[1]: v for k, v in resume.items() if k.startswith(f"{name}/")})
    config = TrainerConfig(**saved["config"])
    if placement is not None:
        config = dataclasses.replace(config, device=placement.device, precision=placement.precision)
    trainer = OnlineTrainer(model, config)
    for name, value in saved["counters"].items():
        setattr(trainer, name, value)
    if saved["optimizer"] is not None:
        trainer.start()
        trainer.optimizer.load_state_dict(optimizer_state(load_file(str(directory / OPTIMIZER)),
                                                           saved["optimizer"]))
    if trainer.scaler is not None and saved.get("scaler"):   # else a run placed in fp16 starts a scale
        trainer.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(load_file(str(directory / RNG))["torch"])
    return trainer
