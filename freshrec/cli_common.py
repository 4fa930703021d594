"""What every `freshrec` sub-command shares: `UsageError` (exit 2), `fail`, `emit` (the `--json`
line or a table), the stderr console `err`, finding MovieLens (`resolve_data`) and `--model` options.

>>> human("positive_rate", 0.5537), human("rows", 100000)
('55.37 %', '100,000')
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Table

from freshrec.config import cache_dir, data_root
from freshrec.events.datasets.fetch import FetchError, fetch_movielens
from freshrec.models import MODELS, ModelConfig

__all__ = ["UsageError", "emit", "err", "fail", "human", "model_options", "resolve_data"]

err = Console(stderr=True)


class UsageError(Exception):
    """A bad option or value: exit code 2."""


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit with `code`."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def emit(figures: dict, as_json: bool, title: str) -> None:
    """The figures: one JSON line on stdout with `as_json`, else a table."""
    if as_json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
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


def resolve_data(fmt: str, data: Path | None, fallback: str | None) -> tuple[str, Path | None, str]:
    """(format, path, note): finds or downloads MovieLens when --data is left out."""
    if data is not None or fmt != "movielens-100k":
        return fmt, data, ""
    try:
        path = fetch_movielens(data_root(), cache_dir())
        return fmt, path, f"MovieLens-100k from {path}"
    except FetchError as error:
        if fallback != "simulator":
            raise
        return "simulator", None, f"MovieLens-100k unavailable ({error}); replaying the simulator instead"


def model_options(model: str | None, dim: int, lr: float, seed: int,
                  ordinal_levels: str | None = None) -> tuple[str, ModelConfig] | None:
    """(model name, shared config) for `--model`, None for ingestion only; `ordinal_levels` is
    `--ordinal-levels`, numbers separated by commas."""
    if model is None:
        return None
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    if dim <= 0 or not lr > 0:
        raise UsageError("--dim and --lr must be positive")
    try:
        levels = tuple(float(level) for level in ordinal_levels.split(",")) if ordinal_levels else ()
        return model, ModelConfig(dim=dim, lr=lr, seed=seed, ordinal_levels=levels)
    except ValueError as error:
        raise UsageError(f"--ordinal-levels {ordinal_levels!r}: {error}") from error
