"""`freshrec config check|show`: validate a YAML configuration, or print the effective one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freshrec.config import ConfigError, FreshrecConfig, load_config, show_config

__all__ = ["config_app"]

config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check or show a YAML configuration.")


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="The YAML file.")]) -> None:
    """Validate FILE as `freshrec run --config FILE` would: exit 0 and 'ok', or exit 2 with one line
    per problem (key path, value, what is allowed)."""
    _load(path)
    typer.echo(f"{path}: ok")


@config_app.command("show")
def config_show(path: Annotated[Path | None, typer.Argument(help="The YAML file (none: the defaults).")] = None
                ) -> None:
    """Print the effective configuration, defaults filled in, as YAML with a comment per key."""
    typer.echo(show_config(_load(path) if path is not None else FreshrecConfig()), nl=False)


def _load(path: Path) -> FreshrecConfig:
    """The config in `path`; exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
