"""`freshrec datasets`: the data sets found under $FRESHREC_DATA."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

__all__ = ["datasets_command"]


def datasets_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List the data sets found under $FRESHREC_DATA (default ../shared/data)."""
    from rich.console import Console
    from rich.table import Table

    from freshrec.cli.output import note
    from freshrec.config import data_root
    from freshrec.events.datasets import discover

    root = data_root()
    found = discover(root)
    if as_json:
        rows = [{"format": d.format, "path": str(d.path), "description": d.description} for d in found]
        sys.stdout.write(orjson.dumps({"root": str(root), "datasets": rows}).decode() + "\n")
        return
    if not found:
        note(f"no data sets under {root} (set FRESHREC_DATA)")
        return
    table = Table(title=f"data sets under {root}")
    for name in ("format", "path", "description"):
        table.add_column(name, overflow="fold")
    for d in found:
        table.add_row(d.format, str(d.path), d.description)
    Console().print(table)
