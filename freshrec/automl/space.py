"""`SearchSpace`: what a search tunes, checked before any trial runs.

A space maps a parameter to its values: a list is the choices (categorical), a mapping
`{low, high[, log][, step]}` a range (integers when `low`, `high` and `step` are integers). A
parameter is a configuration key (`model.dim`, `training.online_batch_size`...: `TUNABLE`) or one of
the article's names (`embed_dim`, `learning_rate`, `num_layers`...: `ALIASES`); `num_layers: N`
makes the deep tower N layers as wide as `layer_width` (or the first of `model.hidden`). A parameter
of any other name is a choice among sets of settings that go together (each choice a mapping of
tunable keys, e.g. `labels: [{}, {features.target: rating, model.ordinal_levels: [3, 5]}]`). Every value
a trial may draw is validated against the configuration first, and a bad space is refused with one
line naming the key (`ConfigError`).

>>> space = SearchSpace({"embed_dim": [64, 128, 256], "num_layers": [3, 4, 5],
...                      "learning_rate": [1e-4, 3e-4, 1e-3]})
>>> space.overrides({"embed_dim": 64, "num_layers": 3, "learning_rate": 1e-3})
{'model.dim': 64, 'model.lr': 0.001, 'model.hidden': [64, 64, 64]}
>>> SearchSpace({"labels": [{}, {"model.ordinal_levels": [3]}]})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: search_space.labels: model.ordinal_levels: goes with features.target ...
>>> SearchSpace({"embed_dim": []})
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: search_space.embed_dim: an empty list of choices
>>> SearchSpace({"model.lr": {"low": 0.5, "high": 0.1}})
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: search_space.model.lr: low 0.5 is above high 0.1
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from freshrec.config import ConfigError, FreshrecConfig, with_overrides

__all__ = ["ALIASES", "DEFAULT_SPACE", "TUNABLE", "Choice", "Range", "SearchSpace"]

TUNABLE = (
    "features.target", "model.name", "model.dim", "model.lr", "model.hidden", "model.cross_layers", "model.admit_after",
    "model.ttl", "model.capacity", "model.ordinal_levels", "embedding.linear_lr", "embedding.initial_accumulator",
    "training.dense_lr", "training.online_batch_size", "training.online_batch_window",
    "training.offline_interval", "training.epochs", "fusion.strategy",
)
"""The configuration keys a search may tune: what the prequential objective honours."""
ALIASES = {
    "model": "model.name", "embed_dim": "model.dim", "learning_rate": "model.lr",
    "dense_learning_rate": "training.dense_lr", "linear_learning_rate": "embedding.linear_lr",
    "batch_size": "training.online_batch_size", "batch_window": "training.online_batch_window",
    "fusion": "fusion.strategy", "num_layers": "num_layers", "layer_width": "layer_width",
}
"""The article's (and other short) names of parameters; `num_layers` and `layer_width` together set
`model.hidden`."""
DEFAULT_SPACE: dict[str, Any] = {
    "model.name": ["fm", "lr", "deepfm"],
    "model.dim": [8, 16, 32, 64],
    "model.lr": {"low": 0.005, "high": 0.5, "log": True},
    "embedding.linear_lr": {"low": 0.02, "high": 2.0, "log": True},
    "embedding.initial_accumulator": {"low": 0.01, "high": 1.0, "log": True},
    "training.online_batch_size": [1, 8, 64, 512],
    "model.admit_after": [1, 2, 4],
    "fusion.strategy": ["none", "hedge", "rebase"],
}
"""What `freshrec automl` tunes when no space is given."""


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of `values` (any configuration values; lists are drawn by index)."""

    values: tuple
    bundle: bool = False

    @property
    def encoded(self) -> bool:
        """Whether Optuna holds the choices as JSON text (lists, mappings: not values it can store)."""
        return not all(v is None or isinstance(v, (bool, int, float, str)) for v in self.values)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if not self.encoded:
            return trial.suggest_categorical(name, self.values)
        return json.loads(trial.suggest_categorical(name, [json.dumps(v) for v in self.values]))


@dataclass(frozen=True)
class Range:
    """A numeric parameter between `low` and `high` (log scale with `log`, multiples of `step`)."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        if self.integer:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class SearchSpace:
    """The parameters of `space` (None: `DEFAULT_SPACE`), each checked against `base` (None: the
    defaults): `ConfigError` naming the first bad key."""

    def __init__(self, space: Mapping[str, Any] | None = None, base: FreshrecConfig | None = None) -> None:
        self.space = dict(DEFAULT_SPACE if space is None else space)
        self.base = base or FreshrecConfig()
        if not self.space:
            raise ConfigError(["search_space: no parameter to tune"])
        self.params = {name: _parameter(name, spec) for name, spec in self.space.items()}
        if "num_layers" not in self.params and "layer_width" in self.params:
            raise ConfigError(["search_space.layer_width: needs num_layers beside it"])
        if "num_layers" in self.params and "model.hidden" in self.params:
            raise ConfigError(["search_space.num_layers: model.hidden is tuned too (tune one of them)"])
        for name, parameter in self.params.items():
            for value in _extremes(parameter):
                self._check(name, value)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One value per parameter, drawn by `trial` (by the parameter's name as given)."""
        return {name: parameter.suggest(trial, name) for name, parameter in self.params.items()}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` as a study stores them (a trial's `params`: lists and mappings as JSON text) decoded."""
        return {name: json.loads(value) if isinstance(p := self.params.get(name), Choice) and p.encoded
                and isinstance(value, str) else value for name, value in params.items()}

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The configuration keys `params` (parameter name -> value, decoded or as a study stores them) set."""
        out: dict[str, Any] = {}
        for name, value in self.decode(params).items():
            parameter = self.params.get(name)
            if isinstance(parameter, Choice) and parameter.bundle:
                out.update(value)
            elif name not in ("num_layers", "layer_width"):
                out[ALIASES.get(name, name)] = value
        if "num_layers" in params:
            width = params.get("layer_width") or (self.base.model.hidden or (64,))[0]
            out["model.hidden"] = [int(width)] * int(params["num_layers"])
        return out

    def config(self, params: Mapping[str, Any]) -> FreshrecConfig:
        """`base` with `params` put in."""
        return with_overrides(self.base, self.overrides(params))

    def _check(self, name: str, value: Any) -> None:
        parameter = self.params[name]
        changes = value if isinstance(parameter, Choice) and parameter.bundle else {ALIASES.get(name, name): value}
        key = ALIASES.get(name, name)
        if key in ("num_layers", "layer_width"):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "num_layers" else 1):
                raise ConfigError([f"search_space.{name}: expected an integer >= {int(key == 'layer_width')}, "
                                   f"got {value!r}"])
            return
        try:
            with_overrides(self.base, changes)
        except ConfigError as error:
            detail = str(error) if len(changes) > 1 or key not in changes else str(error).split(": ", 1)[-1]
            raise ConfigError([f"search_space.{name}: {detail}"]) from None


def _parameter(name: str, spec: Any) -> Choice | Range:
    if isinstance(name, str) and name not in ALIASES and name not in TUNABLE and _bundles(spec):
        if unknown := sorted({key for choice in spec for key in choice} - set(TUNABLE)):
            raise ConfigError([f"search_space.{name}: {unknown[0]} is not a key freshrec tunes (tunable: "
                               f"{', '.join(TUNABLE)})"])
        return Choice(tuple(dict(choice) for choice in spec), bundle=True)
    if not isinstance(name, str) or (name not in ALIASES and name not in TUNABLE):
        raise ConfigError([f"search_space.{name}: not a parameter freshrec tunes (tunable: "
                           f"{', '.join([*ALIASES, *TUNABLE])})"])
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError([f"search_space.{name}: an empty list of choices"])
        return Choice(tuple(spec))
    if not isinstance(spec, Mapping):
        raise ConfigError([f"search_space.{name}: expected a list of choices or a mapping {{low, high}}, "
                           f"got {spec!r}"])
    if unknown := sorted(set(spec) - {"low", "high", "log", "step"}):
        raise ConfigError([f"search_space.{name}: unknown range key {unknown[0]!r} (allowed: low, high, log, step)"])
    if missing := [k for k in ("low", "high") if k not in spec]:
        raise ConfigError([f"search_space.{name}: a range needs {missing[0]}"])
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if not all(_number(v) for v in (low, high)) or (step is not None and not (_number(step) and step > 0)):
        raise ConfigError([f"search_space.{name}: low, high and step must be finite numbers (step > 0)"])
    if low > high:
        raise ConfigError([f"search_space.{name}: low {low} is above high {high}"])
    if log and (low <= 0 or step is not None):
        raise ConfigError([f"search_space.{name}: a log range needs low > 0 and no step"])
    return Range(low, high, log, step)


def _bundles(spec: Any) -> bool:
    """Whether `spec` is a list of sets of settings (mappings), the choices of a bundle."""
    return isinstance(spec, (list, tuple)) and bool(spec) and all(isinstance(choice, Mapping) for choice in spec)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _extremes(parameter: Choice | Range) -> tuple:
    """The values that stand for all a parameter may take: every choice, or a range's ends."""
    if isinstance(parameter, Choice):
        return parameter.values
    return (parameter.low, parameter.high)
