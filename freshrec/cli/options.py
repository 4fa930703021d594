"""Command-line options as overrides of `FreshrecConfig` keys, defined once and shared.

Each `Flag` names the config key it sets; a flag left out is "not given" (None), so the config's
defaults are the only defaults. `overriding(*groups)` gives a sub-command the flags of the groups
(`SOURCE`: every command that reads a stream; `KAFKA`: the topic, for `run` and `produce`; `MODEL`,
`OFFLINE`, `SERVING`, `PUBLISH`, `ENGINE`) and hands it the given ones as `overrides` (key path ->
value); `build_config` applies them to the `--config` file or the defaults, naming the flag of a bad
value.

>>> config = build_config(None, {"training.online_batch_size": 64, "source.limit": 10})
>>> config.training.online_batch_size, config.source.limit
(64, 10)
>>> build_config(None, {"source.limit": -1})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.config.errors.ConfigError: --limit (source.limit): expected a number >= 0, got -1
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, with_parameters
from freshrec.config import FORMATS, ConfigError, FreshrecConfig, load_config, with_overrides

__all__ = ["AUTOSCALE", "ENGINE", "KAFKA", "MODEL", "OFFLINE", "PUBLISH", "SERVING", "SOURCE", "Flag", "build_config",
           "overriding"]

_DEFAULTS = FreshrecConfig().model_dump(mode="json")


@dataclass(frozen=True)
class Flag:
    """`decl` (e.g. `--batch-size`) sets the config key `key` to its value, after `convert`."""

    decl: str
    key: str
    type: Any
    help: str
    convert: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        """The parameter's name: `--batch-size` -> `batch_size`."""
        return self.decl.split("/")[0].removeprefix("--").replace("-", "_")

    def parameter(self) -> inspect.Parameter:
        """The typer parameter: default None ("not given"); the help ends with the config key and its default."""
        default = _DEFAULTS
        for part in self.key.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        shown = "null" if default is None else default
        option = typer.Option(self.decl, help=f"{self.help} ({self.key} = {shown})", show_default=False)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[self.type | None, option])


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(level) for level in text.split(","))
    except ValueError:
        raise UsageError(f"--ordinal-levels {text!r}: expected numbers separated by commas, e.g. 2,3,5") from None


def _settings(pairs: list[str]) -> dict[str, str]:
    if any("=" not in pair for pair in pairs):
        raise UsageError(f"--kafka-setting takes KEY=VALUE, got {[p for p in pairs if '=' not in p][0]!r}")
    return dict(pair.split("=", 1) for pair in pairs)


SOURCE = (
    Flag("--format", "source.format", str, f"The data set's format: {', '.join(FORMATS)}."),
    Flag("--data", "source.data", Path, "File or folder to replay."),
    Flag("--user", "source.columns.user", str, "csv/parquet: the user id column."),
    Flag("--item", "source.columns.item", str, "csv/parquet: the item id column."),
    Flag("--time", "source.columns.time", str, "csv/parquet: event time (epoch s or ISO)."),
    Flag("--label", "source.columns.label", str, "csv/parquet: a 0/1 column or a rule like 'rating>=4'."),
    Flag("--cat", "source.columns.categorical", list[str], "csv/parquet: extra categorical column (repeatable)."),
    Flag("--dense", "source.columns.dense", list[str], "csv/parquet: extra dense column (repeatable)."),
    Flag("--multi", "source.columns.multi", list[str], "csv/parquet: multi-valued column (repeatable)."),
    Flag("--sep", "source.columns.separator", str, "csv/parquet: separator inside --multi values."),
    Flag("--delimiter", "source.columns.delimiter", str, "CSV delimiter (default: sniffed)."),
    Flag("--target", "features.target", str, "The graded column the label comes from (e.g. rating)."),
    Flag("--ordinal-levels", "model.ordinal_levels", str, "Other levels of --target learned beside the label, "
         "e.g. 2,3,5 for the label rating>=4 of 1-5 stars.", _numbers),
    Flag("--limit", "source.limit", int, "Stop at this many events from the start of the stream."),
    Flag("--speed", "source.speed", float, "Pace by event time: 1 = as it happened, 60 = an hour a minute."),
    Flag("--fallback", "source.fallback", str, "'simulator': replay it when MovieLens-100k is missing."),
)
MODEL = (
    Flag("--model", "model.name", str, "The model: lr, fm, deepfm or dcn."),
    Flag("--dim", "model.dim", int, "Embedding width (FM factors)."),
    Flag("--lr", "model.lr", float, "Learning rate (row-wise and dense Adagrad; default 0.5 / sparse fields)."),
    Flag("--seed", "model.seed", int, "Seed of the model and of the simulator."),
    Flag("--batch-size", "training.online_batch_size", int, "Most rows per micro-batch."),
    Flag("--batch-window", "training.online_batch_window", str,
         "A micro-batch also ends before an event this much event time after its first, or whose user "
         "already has one in it (default 1ms; off: by size only).", lambda v: None if v == "off" else v),
    Flag("--device", "gpu.device", str, "Where the model learns: auto, cpu, cuda or cuda:N."),
    Flag("--precision", "gpu.precision", str, "fp32, bf16 (CPU or GPU) or fp16 (GPU)."),
)
OFFLINE = (
    Flag("--offline-interval", "training.offline_interval", str,
         "Retrain offline every this much event time (e.g. 6h; off: never).", lambda v: None if v == "off" else v),
    Flag("--epochs", "training.epochs", int, "Offline training: most passes over the rows."),
    Flag("--fusion", "fusion.strategy", str, "hedge (blend by recent loss), rebase or none."),
)
SERVING = (
    Flag("--host", "serve.host", str, "Address to listen on."),
    Flag("--port", "serve.port", int, "Port to listen on."),
    Flag("--tls-certfile", "serve.tls_certfile", str, "Serve HTTPS with this PEM certificate (chain)."),
    Flag("--tls-keyfile", "serve.tls_keyfile", str, "The certificate's PEM private key."),
)
PUBLISH = (Flag("--sync-interval", "sync.sync_interval", str, "Time between published deltas (e.g. 1s)."),
           Flag("--share", "sync.share", str, "Share the tables in memory under this name (servers on this host: "
                                              "`freshrec serve --attach NAME`)."))
KAFKA = (
    Flag("--bootstrap", "source.kafka.bootstrap", str, "kafka: bootstrap servers."),
    Flag("--topic", "source.kafka.topic", str, "kafka: the events topic (dead letters: TOPIC.dead)."),
    Flag("--kafka-setting", "source.kafka.settings", list[str], "kafka: a librdkafka KEY=VALUE (repeatable).",
         _settings),
)
ENGINE = (
    Flag("--source", "source.kind", str, "replay (the data set, in time order) or kafka."),
    *KAFKA,
    Flag("--idle-timeout", "source.kafka.idle_timeout", str, "kafka: stop after this long without a message."),
    Flag("--join-window", "join.window", str, "Join impressions (kind column) with later actions within this "
         "much event time."),
    Flag("--join-key", "join.key", str, "--join-window: impression_id or user_id,item_id.",
         lambda v: tuple(v.split(","))),
    Flag("--chunk", "source.chunk_rows", int, "Rows read at a time (checkpoints fall between)."),
    Flag("--checkpoint-events", "training.checkpoint_events", int, "Events between checkpoints."),
    Flag("--workers", "training.workers", int, "Training processes (torchrun): tables sharded over them."),
    Flag("--serve/--no-serve", "serve.enabled", bool, "Serve the model over HTTP while it learns."),
    Flag("--retrieval/--no-retrieval", "retrieval.enabled", bool, "Also learn a two-tower retrieval model: "
         "/recommend retrieves half of its candidates with it (see the retrieval section)."),
)
AUTOSCALE = (
    Flag("--metric", "autoscale.metric", str, "lag, lag_seconds, gpu_util, cpu_util, freshness, events_per_s or "
                                              "p99_latency."),
    Flag("--threshold", "autoscale.threshold", str, "The metric's target: per worker for lag and events_per_s "
                                                    "(e.g. 5000), else for the group (e.g. 70% or 0.7, 2s)."),
    Flag("--min-workers", "autoscale.min", int, "Fewest workers."),
    Flag("--max-workers", "autoscale.max", int, "Most workers."),
    Flag("--tolerance", "autoscale.tolerance", float, "No change while value / threshold is within 1 +- this."),
    Flag("--interval", "autoscale.interval", str, "Time between two readings of the metric."),
    Flag("--cooldown", "autoscale.cooldown", str, "Least time between two changes."),
    Flag("--up-window", "autoscale.up_window", str, "Scale-up stabilisation window."),
    Flag("--down-window", "autoscale.down_window", str, "Scale-down stabilisation window."),
    Flag("--max-step-up", "autoscale.max_step_up", int, "Most workers added by one change."),
    Flag("--max-step-down", "autoscale.max_step_down", int, "Most workers removed by one change."),
    Flag("--executor", "autoscale.executor", str, "local (torchrun agents here) or kubernetes."),
    Flag("--server", "autoscale.servers", list[str], "A server's base URL to read freshness/p99 from (repeatable).",
         tuple),
)
FLAGS = {flag.key: flag.decl.split("/")[0]
         for group in (SOURCE, MODEL, OFFLINE, SERVING, PUBLISH, ENGINE, AUTOSCALE) for flag in group}


def overriding(*groups: tuple[Flag, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving a sub-command the flags of `groups`; the command receives the given ones as
    `overrides` (config key -> value)."""
    flags = [flag for group in groups for flag in group]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            overrides = {}
            for flag in flags:
                value = kwargs.pop(flag.name)
                if value is not None:
                    overrides[flag.key] = flag.convert(value) if flag.convert else value
            return command(*args, overrides=overrides, **kwargs)

        return with_parameters(wrapper, command, [flag.parameter() for flag in flags], drop=("overrides",))

    return decorate


def build_config(path: Path | None, overrides: dict[str, Any]) -> FreshrecConfig:
    """The `--config` file (or the defaults) with the flags' `overrides`; `ConfigError` names each
    bad key with its flag."""
    base = load_config(path) if path is not None else FreshrecConfig()
    try:
        return with_overrides(base, overrides)
    except ConfigError as error:
        raise ConfigError([_name_flags(line, overrides) for line in error.problems]) from None


def _name_flags(line: str, given: dict[str, Any]) -> str:
    """`--batch-size (training.online_batch_size): ...` for a problem of a key a flag sets."""
    key, _, rest = line.partition(": ")
    flags = [FLAGS[key]] if key in FLAGS else [FLAGS[k] for k in given if k.startswith(f"{key}.") and k in FLAGS]
    return f"{', '.join(flags)} ({key}): {rest}" if flags else line
