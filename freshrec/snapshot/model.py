"""`Snapshot` (a whole model) and `Delta` (what changed since a version), as directories of
safetensors files beside a `config.json`; nothing is ever unpickled.

A snapshot directory holds `config.json` (format, version, model name, model config, feature
specs, metadata), `dense.safetensors` (the model's torch parameters and buffers) and one
`table.<name>.safetensors` per embedding table (ids, rows, optimizer state, counters). A delta
directory holds `config.json` (since, version, metadata), `dense.safetensors` (every dense weight:
they are small) and `table.<name>.safetensors` with only the rows written and ids deleted since,
plus `interactions.arrow` (Arrow IPC) with the events learned since, for the server's candidates.

>>> import tempfile, pathlib
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=256, total_events=512))
>>> specs = default_specs(sim.fields, dim=4)
>>> trainer, batches = OnlineTrainer(build_model("fm", specs)), [FeaturePipeline(specs).build(c) for c in sim]
>>> _ = trainer.learn(batches[0])
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> Snapshot(trainer.model, version=1).save(tmp / "full")
>>> start = table_versions(trainer.model)
>>> _ = trainer.learn(batches[1])
>>> Delta.capture(trainer.model, since=1, version=2, table_since=start).save(tmp / "delta")
>>> replica = Snapshot.load(tmp / "full").model
>>> Delta.load(tmp / "delta").apply(replica)
>>> bool(torch.equal(replica(batches[1]), trainer.model(batches[1])))
True
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file

from freshrec._tensorfile import save_arrays
from freshrec.embedding.snapshot import config_to_json, load_delta, merge_deltas, merge_states, save_delta
from freshrec.embedding.table import TableDelta
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models.base import OnlineModel
from freshrec.models.factory import build_model, registered

__all__ = ["Delta", "Snapshot", "merge_meta", "model_card", "model_from_card", "read_interactions", "table_versions"]

FORMAT = "freshrec.snapshot/1"
CONFIG, DENSE, INTERACTIONS = "config.json", "dense.safetensors", "interactions.arrow"


def _table_file(name: str) -> str:
    return f"table.{name}.safetensors"


def table_versions(model: OnlineModel) -> dict[str, int]:
    """Each table's version now (what a later `Delta.capture` starts from)."""
    return {name: table.version for name, table in model.tables.items()}


def model_card(model: OnlineModel) -> dict[str, Any]:
    """What rebuilds an empty copy of `model`: its name, config and feature specs (JSON-ready)."""
    models = registered()
    name = next((n for n, (cls, _) in models.items() if type(model) is cls), None)
    if name is None:
        raise TypeError(f"{type(model).__name__} is not one of the registered models {tuple(models)}")
    specs = [{**dataclasses.asdict(s), "kind": s.kind.value} for s in model.specs]
    return {"model": name, "model_config": dataclasses.asdict(model.config), "specs": specs}


def model_from_card(card: dict[str, Any]) -> OnlineModel:
    """The inverse of `model_card`: a fresh model (empty tables) of that name, config and specs."""
    config_class = registered()[card["model"]][1]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in card["model_config"].items()}
    specs = [FeatureSpec(**{**s, "kind": FieldKind(s["kind"])}) for s in card["specs"]]
    return build_model(card["model"], specs, config_class(**options))


def _read_config(directory: Path, kind: str) -> dict[str, Any]:
    config = json.loads((directory / CONFIG).read_text())
    if config.get("format") != FORMAT or config.get("kind") != kind:
        raise ValueError(f"{directory} is not a {kind} of format {FORMAT} "
                         f"(format {config.get('format')!r}, kind {config.get('kind')!r})")
    return config


def _write_interactions(table: pa.Table | None, path: Path) -> None:
    if table is not None:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def read_interactions(directory: Path, kind: str) -> tuple[dict[str, Any], pa.Table | None]:
    """(the metadata, the interactions) of a snapshot ("snapshot") or delta ("delta") directory,
    without its tensors (for a server that takes its model from elsewhere: `freshrec.share`)."""
    return _read_config(Path(directory), kind)["meta"], _read_interactions(Path(directory) / INTERACTIONS)


def _read_interactions(path: Path) -> pa.Table | None:
    if not path.exists():
        return None
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _concat_interactions(tables: Sequence[pa.Table | None]) -> pa.Table | None:
    present = [t for t in tables if t is not None]
    return pa.concat_tables(present) if present else None


def merge_meta(metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metadata of a version from its parts' (`ModelRegistry` parts: one per rank of a group):
    the events counted summed, the times of entry the earliest and latest, the creation time the
    latest; anything else as part 0 has it.

    >>> merge_meta([{"events": 2, "entered_min": 5.0, "created_at": 1.0, "fields": []},
    ...             {"events": 3, "entered_min": None, "created_at": 2.0, "fields": []}])
    {'events': 5, 'entered_min': 5.0, 'created_at': 2.0, 'fields': []}
    """
    out = dict(metas[0])
    for key, pick in (("events", sum), ("events_learned", sum), ("entered_min", min), ("entered_max", max),
                      ("created_at", max)):
        values = [m[key] for m in metas if m.get(key) is not None]
        if key in out:
            out[key] = pick(values) if values else None
    return out


def _load_dense(model: OnlineModel, path: Path) -> None:
    model.load_state_dict(load_file(str(path)), strict=True)


@dataclass
class Snapshot:
    """A whole model at `version`; `meta` holds anything JSON (created_at, train position...);
    `interactions` optionally the recent events (for the server's candidate index)."""

    model: OnlineModel
    version: int
    meta: dict[str, Any] = field(default_factory=dict)
    interactions: pa.Table | None = None

    def save(self, directory: Path) -> None:
        self.capture()(Path(directory))

    def capture(self) -> Callable[[Path], None]:
        """What `save` writes, copied now: the returned function writes it into a directory later, from any
        thread, while the model goes on learning."""
        config = {"format": FORMAT, "kind": "snapshot", "version": self.version,
                  "created_at": self.meta.get("created_at", time.time()), **model_card(self.model),
                  "tables": {n: json.loads(config_to_json(t.config)) for n, t in self.model.tables.items()},
                  "meta": self.meta}
        dense = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        tables = {name: table.state_dict() for name, table in self.model.tables.items()}   # copies
        interactions = self.interactions

        def write(directory: Path) -> None:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / CONFIG).write_text(json.dumps(config, indent=1))
            save_file(dense, str(directory / DENSE))
            for name, state in tables.items():
                save_arrays(state, directory / _table_file(name))
            _write_interactions(interactions, directory / INTERACTIONS)
        return write

    @classmethod
    def load(cls, directory: Path) -> Snapshot:
        """Rebuild the model from `config.json`, then fill its weights and tables."""
        directory = Path(directory)
        config = _read_config(directory, "snapshot")
        model = model_from_card(config)
        _load_dense(model, directory / DENSE)
        for name, table in model.tables.items():
            if json.loads(config_to_json(table.config)) != config["tables"][name]:
                raise ValueError(f"{directory}: table {name!r} config differs from the rebuilt model's")
            table.load_state_dict(load_numpy(str(directory / _table_file(name))))
        model.eval()
        return cls(model, int(config["version"]), {**config["meta"], "created_at": config["created_at"]},
                   _read_interactions(directory / INTERACTIONS))

    @classmethod
    def assemble(cls, parts: Sequence[Path]) -> Snapshot:
        """The whole model from the snapshot directories of its parts (each rank of a worker group
        holds a shard of every table, and the same dense weights): each table's shards merged
        (`merge_states`), the dense weights of part 0, the metadata merged (`merge_meta`), the
        interactions of every part. ValueError when the parts are not of one version and model."""
        parts = [Path(p) for p in parts]
        configs = [_read_config(p, "snapshot") for p in parts]
        first = configs[0]
        if any([c[k] for k in ("version", "model", "tables")] != [first[k] for k in ("version", "model", "tables")]
               for c in configs):
            raise ValueError(f"the parts {', '.join(p.name for p in parts)} are not of one version and model")
        model = model_from_card(first)
        _load_dense(model, parts[0] / DENSE)
        for name, table in model.tables.items():
            if json.loads(config_to_json(table.config)) != first["tables"][name]:
                raise ValueError(f"{parts[0]}: table {name!r} config differs from the rebuilt model's")
            table.load_state_dict(merge_states([load_numpy(str(p / _table_file(name))) for p in parts]))
        model.eval()
        meta = merge_meta([{**c["meta"], "created_at": c["created_at"]} for c in configs])
        return cls(model, int(first["version"]), meta,
                   _concat_interactions([_read_interactions(p / INTERACTIONS) for p in parts]))


@dataclass
class Delta:
    """The change of a model from version `since` to `version`: table deltas, all dense weights,
    and optionally the interactions learned in between (for the server's candidate index)."""

    since: int
    version: int
    tables: dict[str, TableDelta]
    dense: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    interactions: pa.Table | None = None

    @classmethod
    def capture(cls, model: OnlineModel, since: int, version: int, table_since: dict[str, int],
                meta: dict[str, Any] | None = None, interactions: pa.Table | None = None,
                optimizer_state: bool = True) -> Delta:
        """What `model` changed after the table versions in `table_since` (from `table_versions`);
        without `optimizer_state`, the rows' optimizer state stays out (what servers need)."""
        tables = {name: table.delta_since(table_since[name], optimizer_state) for name, table in model.tables.items()}
        dense = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(since, version, tables, dense, {"created_at": time.time(), **(meta or {})}, interactions)

    @property
    def rows(self) -> int:
        """Rows carried (written or deleted) over all tables."""
        return sum(len(d.ids) + len(d.deleted) for d in self.tables.values())

    def apply(self, model: OnlineModel) -> None:
        """Bring a replica at version `since` to `version` (tables first, then the dense weights)."""
        for name, delta in self.tables.items():
            model.tables[name].apply_delta(delta)
        model.load_state_dict(self.dense, strict=True)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "kind": "delta", "since": self.since, "version": self.version,
                  "tables": sorted(self.tables), "meta": self.meta}
        (directory / CONFIG).write_text(json.dumps(config, indent=1))
        save_file({k: v.contiguous() for k, v in self.dense.items()}, str(directory / DENSE))
        for name, delta in self.tables.items():
            save_delta(delta, directory / _table_file(name))
        _write_interactions(self.interactions, directory / INTERACTIONS)

    @classmethod
    def load(cls, directory: Path) -> Delta:
        directory = Path(directory)
        config = _read_config(directory, "delta")
        tables = {name: load_delta(directory / _table_file(name)) for name in config["tables"]}
        return cls(int(config["since"]), int(config["version"]), tables, load_file(str(directory / DENSE)),
                   config["meta"], _read_interactions(directory / INTERACTIONS))

    @classmethod
    def assemble(cls, parts: Sequence[Path]) -> Delta:
        """The whole model's delta from the delta directories of its parts (see `Snapshot.assemble`):
        each table's shard deltas merged (`merge_deltas`), the dense weights of part 0. ValueError
        when the parts do not span the same versions with the same tables."""
        deltas = [cls.load(p) for p in parts]
        first = deltas[0]
        if any((d.since, d.version, sorted(d.tables)) != (first.since, first.version, sorted(first.tables))
               for d in deltas):
            spans = ", ".join(f"{d.since}->{d.version}" for d in deltas)
            raise ValueError(f"the parts of delta {first.version} do not span the same versions and tables ({spans})")
        tables = {name: merge_deltas([d.tables[name] for d in deltas]) for name in first.tables}
        return cls(first.since, first.version, tables, first.dense, merge_meta([d.meta for d in deltas]),
                   _concat_interactions([d.interactions for d in deltas]))
