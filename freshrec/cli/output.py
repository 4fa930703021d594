"""What the sub-commands print: the figures (`emit`: the `--json` line or a table), notes on stderr
(`note`), and the progress bar's status lines.

>>> human("positive_rate", 0.5537), human("rows", 100000)
('55.37 %', '100,000')
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import orjson
from rich.console import Console
from rich.table import Table

__all__ = ["emit", "err", "human", "note", "worker_class"]

err = Console(stderr=True)


def note(message: str) -> None:
    """A message on stderr, as it is (no markup; long lines unbroken: they may be commands to copy)."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


def emit(figures: dict, as_json: bool, title: str) -> None:
    """The figures: one JSON line on stdout with `as_json`, else a table."""
    if as_json:
        sys.stdout.write(orjson.dumps(figures, default=str).decode() + "\n")
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if value not in (None, {}):
            table.add_row(key, human(key, value))
    Console().print(table)


def human(key: str, value: object) -> str:
    """A figure as a person reads it: dates for event times, percentages for rates."""
    if key.endswith("_ts") and isinstance(value, float):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    if key.endswith("_rate") and isinstance(value, float):
        return f"{100 * value:.2f} %"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def worker_class(config) -> str:
    """The device class this machine's workers count as in a cost report (`billed_class`): CPU, or the
    GPU's class when they learn on a GPU."""
    import torch

    from freshrec.autoscale.cost import billed_class
    from freshrec.engine.build import training_device

    on_gpu = training_device(config, torch.cuda.is_available()).startswith("cuda")
    return billed_class(config, torch.cuda.get_device_name(0) if on_gpu else None)
