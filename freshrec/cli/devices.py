"""`freshrec devices`: this machine's devices (or those of a recorded NVML answer), each with its
device class, how the GPUs are linked, and where a config's run would go on them.

    freshrec devices                                    # this machine (the CPU alone without NVML)
    freshrec devices --config freshrec.yaml --nvml-answer dgx.json --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import build_config

__all__ = ["devices_command"]


@guarded
def devices_command(
    config: Annotated[Path | None, typer.Option(help="YAML configuration whose gpu, autoscale and devices "
                                                     "sections are placed (default: the defaults).")] = None,
    nvml_answer: Annotated[Path | None, typer.Option(help="A recorded NVML answer (JSON, as "
                                                          "freshrec.devices.read_nvml returns it) instead of "
                                                          "this machine's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The devices (class, memory, compute capability), the GPUs' links and the placement of a run."""
    from freshrec.autoscale.placement import place
    from freshrec.cli.output import emit
    from freshrec.devices import class_of, machine_devices

    settings = build_config(config, {})
    answer = _read_answer(nvml_answer) if nvml_answer is not None else None
    try:
        devices, topology = machine_devices(answer)
        placement = place(settings, devices, topology)
    except ValueError as error:   # a malformed answer, or a gpu block this machine cannot hold
        source = f"--nvml-answer {nvml_answer}" if nvml_answer is not None else "this machine"
        raise UsageError(f"{error} ({source})") from None
    classes = settings.devices.classes
    rows = [{"kind": d.kind, "index": d.index, "name": d.name, "class": class_of(d.name, classes, d.kind),
             "memory_bytes": d.memory_bytes, "capability": ".".join(map(str, d.capability)) if d.capability else None,
             "cores": d.cores} for d in devices]
    matrix = topology.matrix() if topology is not None else None
    if as_json:
        emit({"devices": rows, "topology": matrix, "placement": placement.as_dict()}, True, "")
        return
    _print(rows, matrix, placement.describe())


def _read_answer(path: Path) -> dict[str, Any]:
    """The recorded NVML answer at `path`; UsageError naming the file where it is not a JSON object."""
    try:
        answer = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise UsageError(f"--nvml-answer {path}: {error}") from None
    if not isinstance(answer, dict):
        raise UsageError(f"--nvml-answer {path}: expected a JSON object (driver, gpus, pairs), "
                         f"got {type(answer).__name__}")
    return answer


def _print(rows: list[dict[str, Any]], matrix: str | None, placement: list[str]) -> None:
    """The devices as a table, the link matrix, the placement's lines."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="devices")
    for name in ("device", "name", "class", "memory", "capability / cores"):
        table.add_column(name, overflow="fold")
    for row in rows:
        detail = row["capability"] if row["kind"] == "gpu" else f"{row['cores']} cores"
        table.add_row(f"{row['kind']}{row['index']}", row["name"], row["class"] or "(none)",
                      f"{row['memory_bytes'] / (1 << 30):.1f} GiB", detail)
    console.print(table)
    for line in ([matrix, ""] if matrix else []) + placement:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
