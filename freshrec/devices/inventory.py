"""The devices of a machine as plain data: its GPUs (from NVML, or a recording of NVML's answer),
or its CPU where there is no GPU; and the device class a device belongs to (`class_of`).

>>> answer = {"driver": "recorded", "pairs": [{"a": 0, "b": 1, "level": 10, "nvlinks": 12}],
...     "gpus": [{"index": i, "name": "NVIDIA A100-SXM4-80GB", "uuid": f"GPU-{i}", "bus_id": f"0000:0{i}:00.0",
...               "memory_bytes": 80 << 30, "capability": [8, 0]} for i in range(2)]}
>>> devices, topology = machine_devices(answer)
>>> [(d.kind, d.index, class_of(d.name, ["A100", "T4"])) for d in devices], topology.link(0, 1)
([('gpu', 0, 'A100'), ('gpu', 1, 'A100')], 'NV12')
>>> class_of("Tesla V100-SXM2-16GB", ["V100", "V10"]), class_of("NVIDIA GeForce RTX 4090", ["A100"])
('V100', None)
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from freshrec.devices.topology import Topology, inventory

__all__ = ["Device", "class_of", "cpu_device", "machine_devices"]


@dataclass(frozen=True)
class Device:
    """One device work can be placed on: a GPU (`capability`: CUDA compute capability) or the
    machine's CPU (`index` 0, `cores`: logical cores; `memory_bytes`: the machine's memory)."""

    kind: Literal["gpu", "cpu"]
    index: int
    name: str
    memory_bytes: int
    capability: tuple[int, int] | None = None
    cores: int | None = None


def machine_devices(answer: dict[str, Any] | None = None) -> tuple[list[Device], Topology | None]:
    """The GPUs of NVML's `answer` (None: ask NVML on this machine) and their topology; where there
    is no GPU (no nvidia-ml-py, no driver, or an answer listing none), the CPU alone and no topology.
    ValueError (from `Topology.from_answer`) where `answer` is malformed.

    >>> devices, topology = machine_devices({"driver": "none", "gpus": [], "pairs": []})
    >>> [d.kind for d in devices], topology
    (['cpu'], None)
    """
    topology = Topology.from_answer(answer) if answer is not None else inventory()
    if not topology.gpus:
        return [cpu_device()], None
    return [Device("gpu", g.index, g.name, g.memory_bytes, g.capability) for g in topology.gpus], topology


def cpu_device(cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo")) -> Device:
    """This machine's CPU: its model name (`cpuinfo`'s "model name", else `platform.processor()`),
    the machine's memory (`meminfo`'s MemTotal, else `os.sysconf`) and its logical cores."""
    return Device("cpu", 0, _model_name(cpuinfo), _memory_bytes(meminfo), None, os.cpu_count())


def _model_name(cpuinfo: Path) -> str:
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
    except OSError:   # not Linux
        found = None
    return found.group(1).strip() if found else platform.processor() or platform.machine() or "CPU"


def _memory_bytes(meminfo: Path) -> int:
    try:
        found = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1)) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # no sysconf (Windows) or the names unknown
        return 0


def class_of(name: str, classes: Iterable[str], kind: str = "gpu") -> str | None:
    """The class of `classes` a device named `name` belongs to, spelled as in `classes`: the
    first class, longest first, found in the name as a whole token, case-insensitive
    ("NVIDIA A100-SXM4-80GB" -> A100, "Tesla T4" -> T4); with `kind` "cpu", the class named CPU
    whatever the processor's name. None where no class matches.

    >>> class_of("NVIDIA H100 80GB HBM3", ["H10", "H100"]), class_of("AMD EPYC 7R13", ["cpu", "T4"], kind="cpu")
    ('H100', 'cpu')
    """
    names = sorted(classes, key=lambda c: (-len(c), c))
    if kind == "cpu":
        return next((c for c in names if c.upper() == "CPU"), None)
    for candidate in names:
        if re.search(rf"(?<![a-z0-9]){re.escape(candidate)}(?![a-z0-9])", name, re.IGNORECASE):
            return candidate
    return None
