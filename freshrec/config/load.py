"""Reading a YAML config (`load_config`) and writing the effective one back (`show_config`).

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "freshrec.yaml"
>>> _ = path.write_text("training:\\n  offline_interval: 6x\\n  epochs: 0\\n")
>>> load_config(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: ...freshrec.yaml: training.offline_interval: expected a non-negative duration ...
...freshrec.yaml: training.epochs: expected a number >= 1, got 0
>>> _ = path.write_text("training: {offline_interval: 90m}\\n")
>>> print(show_config(load_config(path)).split("training:")[1].split("\\n")[3])
  offline_interval: 90m  # Event time between offline retrainings (null: by offline_events only, or never)
>>> with_overrides(load_config(path), {"model.dim": 8, "source.columns.user": "u"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: source.columns.item: missing (a required key)...
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from freshrec.config.errors import ConfigError, problems, show_value
from freshrec.config.schema import FreshrecConfig

__all__ = ["load_config", "parse_config", "show_config", "with_overrides"]

HEADER = "# freshrec config: every setting, defaults filled in\n"


def load_config(path: str | os.PathLike[str]) -> FreshrecConfig:
    """The config in the YAML file at `path` (an empty file gives the defaults); `ConfigError` lists
    every problem, each with its key path, the bad value and what is allowed."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(["no such config file"], source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"cannot read the config file ({getattr(error, 'strerror', None) or error})"],
                          source) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {error.problem or error.context}"], source) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"invalid YAML: {error}"], source) from None
    return parse_config(data, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *anchor` merges, explicit keys override
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_config(data: Any, source: str | None = None) -> FreshrecConfig:
    """The config in `data`, parsed YAML (None: the defaults); `source` names it in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        sections = ", ".join(FreshrecConfig.model_fields)
        raise ConfigError([f"top level: expected a mapping with keys {sections}, got {show_value(data)}"], source)
    placeholders = [f"{path}: {HIDDEN!r} stands where `config show` hid a secret: give the secret itself"
                    for path in _placeholders(data)]
    if placeholders:
        raise ConfigError(placeholders, source)
    try:
        config = FreshrecConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(problems(error, FreshrecConfig), source) from None
    if config.problems():
        raise ConfigError(config.problems(), source)
    return config


def with_overrides(config: FreshrecConfig, changes: Mapping[str, Any]) -> FreshrecConfig:
    """`config` with the values of `changes` (dotted key paths, e.g. `training.online_batch_size`)
    put in, validated again as a whole (`ConfigError` names the keys)."""
    data = config.model_dump()
    for path, value in changes.items():
        *parents, name = path.split(".")
        node = data
        for part in parents:
            if node.get(part) is None:   # e.g. source.columns, null until a mapping is given
                node[part] = {}
            node = node[part]
        node[name] = value
    return parse_config(data)


SECRET = re.compile(r"password|secret|token|credential|private", re.I)
"""Names of settings whose values `show_config` hides (librdkafka's `sasl.password`, `ssl.key.password`...)."""
HIDDEN = "<hidden>"
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@", re.I)


def show_config(config: FreshrecConfig, secrets: bool = False) -> str:
    """The effective config as YAML, each setting with its description as a comment (durations as
    `6h`); `load_config` reads it back to an equal config. Values of settings named like secrets
    (`SECRET`, e.g. `sasl.password`) and the password in a URL show as `<hidden>` unless `secrets`
    (a file that must work as the config: a deployment's)."""
    return HEADER + "".join(_lines(config, 0, secrets))


def _lines(model: BaseModel, depth: int, secrets: bool) -> Iterator[str]:
    data, pad = model.model_dump(mode="json"), "  " * depth
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield f"{pad}{name}:  # {field.description}\n"
            yield from _lines(value, depth + 1, secrets)
        else:
            yield f"{pad}{name}: {_inline(data[name] if secrets else _hidden(data[name]))}  # {field.description}\n"


def _hidden(value: Any) -> Any:
    """`value` with the secrets in it hidden: the values of keys named like one, a URL's password."""
    if isinstance(value, dict):
        return {k: HIDDEN if SECRET.search(str(k)) else _hidden(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hidden(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<1>{HIDDEN}@", value)
    return value


def _placeholders(value: Any, path: str = "") -> Iterator[str]:
    """The key paths of the `<hidden>` placeholders in parsed YAML (a value, or a URL's password): a
    copy of `config show`'s output, which would run with them as the secrets."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _placeholders(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _placeholders(item, f"{path}[{index}]")
    elif isinstance(value, str) and (value == HIDDEN or f":{HIDDEN}@" in value):
        yield path


def _inline(value: Any) -> str:
    """`value` as one line of YAML (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip().removesuffix("\n...")
    return json.dumps(value) if "\n" in text else text
