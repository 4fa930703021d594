"""Where each part of a run goes on a machine: the online trainer and the servers on the hot tier
(the fastest hot class present, or `gpu.type`), offline retraining on the cold tier (the cheapest
cold class present), the trainer's `gpu.count` GPUs chosen so that NVLink stays inside the group.

A GPU that matches no class of `devices.classes` is its own class, named as NVML names it, taken as
hot with speed 1 (an A100's) and cost 0: it is placed, and its device-seconds are reported unpriced.
On a machine without a GPU, or when the config trains on the CPU (`gpu.count` 0, `gpu.device`
cpu), everything goes on the CPU, as the engine does (`freshrec.engine.build.training_device`).

>>> from freshrec.config import parse_config
>>> from freshrec.devices import machine_devices
>>> answer = {"driver": "recorded", "pairs": [{"a": 0, "b": 1, "level": 10, "nvlinks": 12}], "gpus": [
...     {"index": i, "name": name, "uuid": f"GPU-{i}", "bus_id": f"0000:0{i}:00.0", "memory_bytes": 16 << 30,
...      "capability": [8, 0]} for i, name in enumerate(["NVIDIA A100-PCIE-40GB"] * 2 + ["Tesla T4"] * 2)]}
>>> placement = place(parse_config({"gpu": {"type": "A100", "count": 2}}), *machine_devices(answer))
>>> placement.trainer, placement.servers, placement.offline
([(0, 1)], 'A100', 'T4')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from freshrec.config import DeviceClass, FreshrecConfig
from freshrec.devices import Device, Topology, class_of

__all__ = ["agent_gpus", "UNKNOWN_CLASS", "Placement", "place"]

UNKNOWN_CLASS = DeviceClass(cost_per_hour=0.0, speed=1.0, tier="hot")
"""What a device of no configured class is taken for: hot, as fast as an A100, unpriced."""


@dataclass
class Placement:
    """Where a run's parts go. `trainer`: the trainer group's GPU indices (one tuple), or ["cpu"];
    `trainer_class`, `servers`, `offline`: the class each runs on; `classes`: those classes'
    prices and speeds (for `CostMeter`); `scale`: (autoscale.min, autoscale.max) with gpu.autoscale."""

    trainer: list[tuple[int, ...] | str]
    trainer_class: str
    servers: str
    offline: str
    classes: dict[str, DeviceClass]
    scale: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """The placement in lines a person reads."""
        where = ("the CPU" if self.trainer == ["cpu"]
                 else "GPUs " + " + ".join(",".join(map(str, group)) for group in self.trainer))
        lines = [f"trainer: {where} ({self.trainer_class})", f"servers: {self.servers}",
                 f"offline retraining: {self.offline}"]
        lines += [f"{name}: {c.cost_per_hour:g} per device-hour, speed {c.speed:g}, {c.tier}"
                  for name, c in self.classes.items()]
        return lines + [f"note: {note}" for note in self.notes]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the groups as lists, the classes as dicts."""
        return {"trainer": [g if isinstance(g, str) else list(g) for g in self.trainer],
                "trainer_class": self.trainer_class, "servers": self.servers, "offline": self.offline,
                "classes": {name: c.model_dump() for name, c in self.classes.items()},
                "scale": list(self.scale) if self.scale else None, "notes": self.notes}


def place(config: FreshrecConfig, devices: Sequence[Device], topology: Topology | None) -> Placement:
    """The placement of `config`'s run on a machine of `devices` (see `machine_devices`). ValueError
    naming the key where `gpu.type` is not on the machine or `gpu.count` is more than it has."""
    gpu, notes = config.gpu, []
    scale = (config.autoscale.min, config.autoscale.max) if gpu.autoscale else None
    wanted = gpu.count or (1 if gpu.device.startswith("cuda") else 0)
    gpus = [d for d in devices if d.kind == "gpu"]
    if topology is None or not gpus:
        if wanted or gpu.type != "none":
            notes.append(f"gpu: {gpu.count} x {gpu.type} asked for, but this machine has no GPU: everything on the CPU")
        return _on_cpu(config, scale, notes)
    if gpu.device == "cpu" or not wanted:
        why = "gpu.device cpu" if gpu.device == "cpu" else "gpu.count 0"
        present = _present(_by_class(config, gpus, []))
        notes.append(f"{why}: the trainer learns on the CPU, though this machine has {present}")
        return _on_cpu(config, scale, notes)
    by_class = _by_class(config, gpus, notes)
    hot = _hot_class(config, by_class, notes)
    indices = [d.index for d in by_class[hot][1]]
    if wanted > len(indices):
        raise ValueError(f"gpu.count: {wanted} x {hot} asked for, but this machine has {len(indices)} "
                         f"({_present(by_class)})")
    group = topology.groups(wanted, among=indices)[0]
    pcie = [(a, b) for a, b in combinations(group, 2) if not topology.nvlinks.get((a, b), 0)]
    if pcie:
        (a, b), pairs = pcie[0], len(group) * (len(group) - 1) // 2
        notes.append(f"the trainer group's GPUs are not all NVLinked: {len(pcie)} of {pairs} pairs over PCIe "
                     f"(GPU{a}-GPU{b}: {topology.link(a, b)})")
    cold = [name for name, (c, _) in by_class.items() if c.tier == "cold"]
    offline = min(cold, key=lambda name: (by_class[name][0].cost_per_hour, name)) if cold else hot
    if not cold:
        notes.append(f"no cold class on this machine: offline retraining on the hot {hot}")
    if scale:
        notes.append(f"gpu.autoscale: the trainer group scales from autoscale.min {scale[0]} to autoscale.max "
                     f"{scale[1]} GPUs ({len(indices)} {hot} on this machine)")
    return Placement([group], hot, hot, offline, {hot: by_class[hot][0], offline: by_class[offline][0]}, scale, notes)


def _by_class(config: FreshrecConfig, gpus: Sequence[Device],
              notes: list[str]) -> dict[str, tuple[DeviceClass, list[Device]]]:
    """The GPUs by class name, with each class's settings; a GPU of no class: its own, UNKNOWN_CLASS (noted)."""
    classes, found = config.devices.classes, {}
    for device in gpus:
        name = class_of(device.name, classes)
        if name is None and device.name not in found:
            notes.append(f"GPU {device.name!r} matches no class of devices.classes ({', '.join(classes)}): taken as "
                         f"hot, speed 1, cost 0 (add it to devices.classes to price it)")
        key = name or device.name
        found.setdefault(key, (classes[name] if name else UNKNOWN_CLASS, []))[1].append(device)
    return found


def _hot_class(config: FreshrecConfig, by_class: dict[str, tuple[DeviceClass, list[Device]]], notes: list[str]) -> str:
    """`gpu.type`'s class when given (ValueError when not present), else the fastest hot class present
    (a configured class, then more GPUs, on a tie), else the fastest class."""
    asked = config.gpu.type
    if asked != "none":
        hot = next((name for name in by_class if name.lower() == asked.lower() or class_of(name, [asked])), None)
        if hot is None:
            raise ValueError(f"gpu.type: {asked} asked for, but this machine has {_present(by_class)}")
        if by_class[hot][0].tier == "cold":
            notes.append(f"gpu.type {asked}: a cold class (devices.classes), trainer and servers on it as asked")
        return hot
    hot = [name for name, (c, _) in by_class.items() if c.tier == "hot"] or list(by_class)
    known = config.devices.classes
    chosen = max(hot, key=lambda name: (by_class[name][0].speed, name in known, len(by_class[name][1]), name))
    if by_class[chosen][0].tier == "cold":
        notes.append(f"no hot class on this machine: trainer and servers on the fastest, {chosen}")
    return chosen


def _present(by_class: dict[str, tuple[DeviceClass, list[Device]]]) -> str:
    return ", ".join(f"{name} x{len(devices)}" for name, (_, devices) in by_class.items())


def _on_cpu(config: FreshrecConfig, scale: tuple[int, int] | None, notes: list[str]) -> Placement:
    """Everything on the CPU class (UNKNOWN_CLASS, noted, where devices.classes has none)."""
    name = class_of("", config.devices.classes, kind="cpu")
    if name is None:
        notes.append(f"devices.classes has no CPU class ({', '.join(config.devices.classes)}): the CPU is unpriced")
    cpu, name = (config.devices.classes[name], name) if name else (UNKNOWN_CLASS, "CPU")
    if scale:
        notes.append(f"gpu.autoscale: the trainer group scales from autoscale.min {scale[0]} to autoscale.max "
                     f"{scale[1]} workers")
    return Placement(["cpu"], name, name, name, {name: cpu}, scale, notes)


def agent_gpus(config: FreshrecConfig, devices: Sequence[Device], topology: Topology | None) -> list[int]:
    """The GPUs an elastic group on this machine hands its workers, one each, in the order it hands them
    out: the trainer's (hot) class only, the best-linked `autoscale.max` of them first (NVLink inside the
    group a scale-up grows into), then the rest; [] where the trainer learns on the CPU."""
    placement = place(config, devices, topology)
    if placement.trainer == ["cpu"] or topology is None:
        return []
    classes = config.devices.classes
    hot = [d.index for d in devices if d.kind == "gpu" and (class_of(d.name, classes) or d.name) ==
           placement.trainer_class]
    return [i for group in topology.groups(min(config.autoscale.max, len(hot)), among=hot) for i in group]
