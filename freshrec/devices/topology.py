"""GPU inventory and topology from NVML: which GPUs a host has and how each pair is linked.

`read_nvml()` asks NVML (the nvidia-ml-py package) and returns its answer as plain data (JSON-able:
it can be recorded and parsed elsewhere); `Topology.from_answer` parses it, and `Topology.from_smi`
parses what `nvidia-smi topo -m` (NVML's command line) printed on a host. For each pair of GPUs
the link is NVLink (with its number of active links) or the PCIe path between them, named as
`nvidia-smi topo -m` names it: PIX (one PCIe switch), PXB (several switches), PHB (through the
host bridge), NODE (across host bridges of one NUMA node), SYS (across NUMA nodes). `groups(size)`
cuts the GPUs into trainer groups that keep the fastest links inside each group, and `inventory()`
is the machine's topology (empty where there is no NVML or no GPU).

>>> answer = {"driver": "test", "gpus": [
...     {"index": i, "name": "A100", "uuid": f"GPU-{i}", "bus_id": f"0000:0{i}:00.0",
...      "memory_bytes": 80 << 30, "capability": [8, 0]} for i in range(4)],
...     "pairs": [{"a": 0, "b": 1, "level": 10, "nvlinks": 12}, {"a": 2, "b": 3, "level": 10, "nvlinks": 12},
...               {"a": 0, "b": 2, "level": 50, "nvlinks": 0}, {"a": 0, "b": 3, "level": 50, "nvlinks": 0},
...               {"a": 1, "b": 2, "level": 50, "nvlinks": 0}, {"a": 1, "b": 3, "level": 50, "nvlinks": 0}]}
>>> topology = Topology.from_answer(answer)
>>> topology.link(0, 1), topology.link(1, 2), topology.groups(2)
('NV12', 'SYS', [(0, 1), (2, 3)])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LEVELS", "Gpu", "Topology", "inventory", "read_nvml"]

LEVELS = {0: "X", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
"""NVML's common-ancestor levels (nvmlGpuTopologyLevel_t) by `nvidia-smi topo -m`'s names."""
MAX_NVLINKS = 18   # NVML_NVLINK_MAX_LINKS


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML describes it (None: not in the recording, e.g. `nvidia-smi topo -m`'s)."""

    index: int
    name: str | None = None
    uuid: str | None = None
    bus_id: str | None = None
    memory_bytes: int | None = None
    capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Topology:
    """The GPUs of a host and the link of each pair: `levels[(a, b)]` (an NVML level, a < b) and
    `nvlinks[(a, b)]` (active NVLinks between them)."""

    driver: str
    gpus: tuple[Gpu, ...]
    levels: dict[tuple[int, int], int]
    nvlinks: dict[tuple[int, int], int]

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Topology:
        """Parse what `read_nvml` returned (or a recording of it); ValueError names what is missing."""
        try:
            gpus = tuple(Gpu(int(g["index"]), str(g["name"]), str(g["uuid"]), str(g["bus_id"]),
                             int(g["memory_bytes"]), (int(g["capability"][0]), int(g["capability"][1])))
                         for g in answer["gpus"])
            pairs = {(min(p["a"], p["b"]), max(p["a"], p["b"])): (int(p["level"]), int(p["nvlinks"]))
                     for p in answer["pairs"]}
            driver = str(answer["driver"])
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise ValueError(f"not an NVML answer of read_nvml: {error!r}") from None
        indices = {g.index for g in gpus}
        unknown = sorted({i for pair in pairs for i in pair} - indices)
        if unknown:
            raise ValueError(f"pairs name GPUs {unknown} that the answer does not list")
        return cls(driver, gpus, {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()})

    @classmethod
    def from_smi(cls, text: str) -> Topology:
        """Parse the matrix `nvidia-smi topo -m` prints (tab-separated, a header row of GPU<n> and
        other devices, then one row per device; NICs and the affinity columns are left out). It
        names links only: the GPUs' names, memory and the like are None.

        >>> text = "\\tGPU0\\tGPU1\\tCPU Affinity\\nGPU0\\t X \\tNV4\\t0-7\\nGPU1\\tNV4\\t X \\t0-7\\n"
        >>> print(Topology.from_smi(text).matrix())
              GPU0   GPU1
        GPU0  X      NV4
        GPU1  NV4    X
        """
        lines = [line.rstrip("\n") for line in text.splitlines() if line.strip()]
        header = next((line for line in lines if line.split("\t")[0].strip() == "" and "GPU0" in line), None)
        if header is None:
            raise ValueError("no `nvidia-smi topo -m` matrix: a header row naming GPU0 is missing")
        columns = [cell.strip() for cell in header.split("\t")]
        gpu_columns = {k: int(name[3:]) for k, name in enumerate(columns) if re.fullmatch(r"GPU\d+", name)}
        names = {value: level for level, value in LEVELS.items()}
        levels, nvlinks, seen = {}, {}, []
        for line in lines:
            cells = [cell.strip() for cell in line.split("\t")]
            if not re.fullmatch(r"GPU\d+", cells[0]):
                continue
            a = int(cells[0][3:])
            seen.append(a)
            for k, b in gpu_columns.items():
                cell = cells[k] if k < len(cells) else ""
                if b <= a:
                    continue
                if cell.startswith("NV") and cell[2:].isdigit():
                    nvlinks[(a, b)] = int(cell[2:])
                elif cell in names:
                    levels[(a, b)], nvlinks[(a, b)] = names[cell], 0
                else:
                    raise ValueError(f"GPU{a}-GPU{b}: unknown link {cell!r} (expected NV<n>, {', '.join(names)})")
        if sorted(seen) != sorted(gpu_columns.values()):
            raise ValueError(f"the matrix has rows for GPUs {sorted(seen)} but columns {sorted(gpu_columns.values())}")
        return cls("nvidia-smi", tuple(Gpu(i) for i in sorted(seen)), levels, nvlinks)

    def link(self, a: int, b: int) -> str:
        """How GPUs `a` and `b` are linked: "NV<n>" (n NVLinks), else the PCIe path (PIX .. SYS)."""
        if a == b:
            return "X"
        key = (min(a, b), max(a, b))
        if self.nvlinks.get(key, 0):
            return f"NV{self.nvlinks[key]}"
        return LEVELS.get(self.levels.get(key, 50), "SYS")

    def _closeness(self, a: int, b: int) -> tuple[int, int]:
        """Bigger is faster: (NVLinks, minus the PCIe level)."""
        key = (min(a, b), max(a, b))
        return self.nvlinks.get(key, 0), -self.levels.get(key, 50)

    def groups(self, size: int, among: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """The GPUs (`among`, default all) cut into groups of `size` (the last may be smaller),
        greedily: each group starts from the GPU with the most NVLinks left and adds the GPU
        closest to the group's members (most NVLinks, then the nearest PCIe level; ties to the
        lower index)."""
        if size < 1:
            raise ValueError(f"a group holds at least one GPU, not {size}")
        left = sorted(among if among is not None else (g.index for g in self.gpus))
        out = []
        while left:
            first = max(left, key=lambda g: (sum(self._closeness(g, o)[0] for o in left if o != g), -g))
            group = [first]
            left.remove(first)
            while left and len(group) < size:
                best = max(left, key=lambda g: (tuple(map(sum, zip(*(self._closeness(g, m) for m in group)))), -g))
                group.append(best)
                left.remove(best)
            out.append(tuple(sorted(group)))
        return out

    def matrix(self) -> str:
        """The link of every pair as a table, like `nvidia-smi topo -m`."""
        indices = [g.index for g in self.gpus]
        rows = ["      " + "".join(f"GPU{i:<4}" for i in indices)]
        rows += [f"GPU{a:<3}" + "".join(f"{self.link(a, b):<7}" for b in indices) for a in indices]
        return "\n".join(row.rstrip() for row in rows)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_nvml(nvml: Any = None) -> dict[str, Any]:
    """NVML's answer for this host: driver, each GPU (name, UUID, PCI bus id, memory, compute
    capability) and each pair's common PCIe ancestor and active NVLinks. `nvml`: the `pynvml`
    module (imported when None). Raises NVML's error where it has no driver or no GPU."""
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        gpus, bus = [], {}
        for index, handle in enumerate(handles):
            bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
            bus[bus_id.lower()] = index
            gpus.append({"index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
                         "uuid": _text(nvml.nvmlDeviceGetUUID(handle)), "bus_id": bus_id,
                         "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                         "capability": list(nvml.nvmlDeviceGetCudaComputeCapability(handle))})
        links = [_nvlink_peers(nvml, handle, bus) for handle in handles]
        pairs = [{"a": a, "b": b, "level": int(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b])),
                  "nvlinks": links[a].count(b)}
                 for a in range(len(handles)) for b in range(a + 1, len(handles))]
        return {"driver": _text(nvml.nvmlSystemGetDriverVersion()), "gpus": gpus, "pairs": pairs}
    finally:
        nvml.nvmlShutdown()


def _nvlink_peers(nvml: Any, handle: Any, bus: dict[str, int]) -> list[int]:
    """The GPU index at the far end of each active NVLink of `handle` (links to other devices left out)."""
    peers = []
    for link in range(MAX_NVLINKS):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                continue
            remote = _text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId).lower()
        except nvml.NVMLError:   # no such link, or NVLink not supported
            continue
        if remote in bus:
            peers.append(bus[remote])
    return peers


def inventory() -> Topology:
    """This machine's topology; no GPUs where nvidia-ml-py, the driver or a GPU is missing.

    >>> isinstance(inventory(), Topology)
    True
    """
    try:
        return Topology.from_answer(read_nvml())
    except Exception:   # ImportError, NVMLError (no driver, no GPU): nothing to place work on
        return Topology("none", (), {}, {})
