"""`ConfigError`: every problem of a config, one line each, naming the key path, the value and what is allowed.

>>> from pydantic import BaseModel, ConfigDict, ValidationError
>>> class Gpu(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     count: int = 0
>>> class Root(BaseModel):
...     gpu: Gpu = Gpu()
>>> try:
...     Root.model_validate({"gpu": {"count": "eight", "kind": "A100"}})
... except ValidationError as error:
...     print(ConfigError(problems(error, Root), "cfg.yaml"))
cfg.yaml: gpu.count: expected an integer, got 'eight'
cfg.yaml: gpu.kind: unknown key 'kind' (allowed: count)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "key_path", "problems", "show_value"]

EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "string_too_short": "a non-empty string", "path_type": "a path",
    "greater_than": "a number > {gt}", "greater_than_equal": "a number >= {ge}",
    "less_than": "a number < {lt}", "less_than_equal": "a number <= {le}",
    "literal_error": "one of {expected}", "dict_type": "a mapping",
}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class ConfigError(ValueError):
    """A config that cannot be used; `problems` holds one line per problem, `source` the file (or None)."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems, self.source = tuple(problems), source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + line for line in self.problems))


def problems(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per error of `error`, raised while validating `root`."""
    lines = []
    for item in error.errors():
        loc, path = item["loc"], key_path(item["loc"])
        if item["type"] == "value_error":   # a validator's own message
            lines.append(f"{path}: {item['ctx']['error']}")
        elif item["type"] == "missing":
            lines.append(f"{path}: missing (a required key)")
        elif item["type"] == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            allowed = ", ".join(model.model_fields) if model else "none"
            lines.append(f"{path}: unknown key {loc[-1]!r} (allowed: {allowed})")
        else:
            lines.append(f"{path}: expected {_expected(item, root)}, got {show_value(item['input'])}")
    return lines


def key_path(loc: Sequence[str | int]) -> str:
    """`training.offline_interval`; keys that are not plain names in brackets: `settings['linger.ms']`."""
    path = ""
    for part in loc:
        if isinstance(part, str) and _KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path or "top level"


def show_value(value: Any) -> str:
    """A short spelling of a bad value: its repr (cut at 60 characters), or its kind for a collection."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(item: dict, root: type[BaseModel]) -> str:
    if item["type"] in ("model_type", "model_attributes_type"):
        model = _model_at(root, item["loc"])
        return f"a mapping with keys {', '.join(model.model_fields)}" if model else "a mapping"
    if item["type"] in EXPECTED:
        return EXPECTED[item["type"]].format(**item.get("ctx", {}))
    return item["msg"].removeprefix("Input should be ")


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class validating the value at `loc` (None if it is not a model)."""
    node: Any = root
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return None
    node = _unwrap(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X` from `Annotated[X, ...]` and from `X | None`."""
    while get_origin(annotation) in (Annotated, Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation
