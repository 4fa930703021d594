"""The one error wrapper of every `freshrec` sub-command: exit 2 with one line for a usage or
configuration mistake, 1 with one line for a runtime failure, a traceback only with `--debug`.

>>> def broken():
...     raise UsageError("--port 0: expected 1..65535")
>>> try:
...     guarded(broken)()
... except SystemExit as done:
...     print(done.code)
2
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any

import click
import typer

from freshrec.config import ConfigError

__all__ = ["UsageError", "fail", "guarded", "is_usage_error", "with_parameters"]

DEBUG = inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")])


class UsageError(Exception):
    """A bad option or value: exit code 2."""


def is_usage_error(error: BaseException) -> bool:
    """A mistake in the command line or the configuration (exit 2), not a failure while running."""
    if isinstance(error, (UsageError, ConfigError, click.UsageError)):
        return True
    datasets = sys.modules.get("freshrec.events.datasets")   # loaded if the error can come from it
    return datasets is not None and isinstance(error, (datasets.MappingError, datasets.UnknownFormat))


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit with `code`."""
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    raise SystemExit(code)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with a `--debug` option and exit codes 2 (usage) and 1 (runtime), each with one line;
    `typer.Exit` and `SystemExit` pass through."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:  # noqa: BLE001 - the one place every error becomes an exit code
            if debug:
                raise
            fail("; ".join(str(error).splitlines()) or type(error).__name__, 2 if is_usage_error(error) else 1)

    return with_parameters(wrapper, command, [DEBUG])


def with_parameters(wrapper: Callable[..., Any], command: Callable[..., Any], extra: list[inspect.Parameter],
                    drop: tuple[str, ...] = ()) -> Callable[..., Any]:
    """`wrapper` showing typer the parameters of `command` (annotations resolved), less `drop`, plus `extra`."""
    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name not in drop]
    wrapper.__signature__ = inspect.Signature([*own, *extra])
    wrapper.__annotations__ = {}
    return wrapper
