"""The parts of a run, each built from its section of a `FreshrecConfig`: the one place where a
configuration key becomes a component's setting (`freshrec run`, `freshrec serve`, `freshrec replay`
and `freshrec evaluate ab` all build through here).

>>> from freshrec.config import parse_config
>>> config = parse_config({"training": {"online_batch_size": 64, "checkpoint_events": 1000},
...                        "log": {"roll_bytes": 4096}, "sync": {"full_interval": "1m"}})
>>> engine = engine_config(config)
>>> engine.batch_size, engine.checkpoint_events, engine.log_roll_bytes, engine.sync.full_interval
(64, 1000, 4096, 60.0)
>>> serve_config(parse_config({"serve": {"max_candidates": 50}})).max_candidates
50
>>> gpu_note(parse_config({"gpu": {"type": "A100", "count": 8}}), available=False)
'gpu: 8 x A100 asked for: no GPU on this machine: learning on the CPU, fp32'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from freshrec.config import (
    ConfigError,
    FreshrecConfig,
    KafkaSection,
    cache_dir,
    data_root,
    with_overrides,
)
from freshrec.engine.dataflow import EngineConfig
from freshrec.engine.retrieval import RetrievalStage
from freshrec.engine.sync import SyncConfig
from freshrec.events.datasets import ColumnMapping, open_source
from freshrec.events.datasets.fetch import FetchError, fetch_movielens
from freshrec.events.datasets.movielens import movielens_items
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import Field
from freshrec.events.simulator import SimulatorConfig
from freshrec.events.source import LimitedSource, PacedSource, Source
from freshrec.features import FeatureSpec, default_specs
from freshrec.features.content import ItemContent, item_content, read_items
from freshrec.fusion import FusionConfig
from freshrec.join import JoinConfig
from freshrec.models import MODELS, ModelConfig
from freshrec.models.two_tower import TwoTowerConfig
from freshrec.train import TrainerConfig
from freshrec.train.offline import OfflineConfig
from freshrec.train.retrieval import RetrievalConfig, RetrievalLearner

if TYPE_CHECKING:
    from freshrec.serve import ServeConfig

__all__ = ["column_mapping", "engine_config", "feature_specs", "fusion_config", "gpu_note", "join_config",
           "kafka_source", "offline_config", "open_stream", "resolve_data", "item_content_of", "retrieval_stage",
           "serve_config", "simulator_config", "trainer_config", "training_device", "worker_device"]

SIMULATED_EVENTS = 1_000_000
"""Events the simulator makes when `source.limit` is null."""
KAFKA_PARTITIONS = 4
"""Partitions of the events topic when `kafka_source` creates it."""


def resolve_data(config: FreshrecConfig) -> tuple[FreshrecConfig, str]:
    """(config, note): MovieLens-100k found under $FRESHREC_DATA or in the cache, or downloaded, when
    `source.data` is null; without it and with `source.fallback: simulator`, the simulator."""
    source = config.source
    if source.data is not None or source.format != "movielens-100k":
        return config, ""
    try:
        path = fetch_movielens(data_root(), cache_dir())
        return with_overrides(config, {"source.data": path}), f"MovieLens-100k from {path}"
    except FetchError as error:
        if source.fallback != "simulator":
            raise
        return (with_overrides(config, {"source.format": "simulator"}),
                f"MovieLens-100k unavailable ({error}); replaying the simulator instead")


def column_mapping(config: FreshrecConfig) -> ColumnMapping | None:
    """`source.columns` as the reader's `ColumnMapping` (keeping `features.target` beside the events)."""
    columns = config.source.columns
    if columns is None:
        return None
    try:
        return ColumnMapping(columns.user, columns.item, columns.time, columns.label, columns.categorical,
                             columns.dense, columns.multi, columns.separator, columns.delimiter,
                             config.features.target)
    except ValueError as error:
        raise ConfigError([f"source.columns: {error}"]) from None


def simulator_config(config: FreshrecConfig, chunk_rows: int | None = None) -> SimulatorConfig:
    """The simulator of `source.format: simulator`: seeded by `model.seed`, `source.limit` events."""
    limit = config.source.limit
    return SimulatorConfig(seed=config.model.seed, batch_size=chunk_rows or config.source.chunk_rows,
                           total_events=limit if limit is not None else SIMULATED_EVENTS)


def open_stream(config: FreshrecConfig, dead_letters: DeadLetterSink, chunk_rows: int | None = None,
                kafka: Callable[[KafkaSection, Sequence[Field]], Source] | None = None) -> Source:
    """The source of `config.source` (data resolved, see `resolve_data`), paced by `source.speed`,
    cut at `source.limit`; a
    Kafka consumer of events of that shape for `source.kind: kafka` (made by `kafka`, default
    `kafka_source`: a worker group's ranks make theirs)."""
    s = config.source
    rows = chunk_rows or s.chunk_rows
    source = open_source(s.format, s.data, dead_letters, batch_size=rows, mapping=column_mapping(config),
                         simulator=simulator_config(config, rows))
    if s.kind == "kafka":
        return (kafka or kafka_source)(s.kafka, source.fields)
    if s.speed is not None:
        if not source.has_event_time:
            raise ConfigError([f"source.speed: {s.format} has no event time to pace by"])
        source = PacedSource(source, s.speed)
    return LimitedSource(source, s.limit) if s.limit is not None else source


def kafka_source(kafka: KafkaSection, fields, dead_letters: DeadLetterSink | None = None,
                 kind: Callable[..., Source] | None = None, **options) -> Source:
    """A consumer of the topic (created if missing), a `KafkaSource` (or `kind(..., **options)`,
    a subclass); bad messages go to `<topic>.dead`."""
    from freshrec.events.kafka import KafkaDeadLetters, KafkaSink, KafkaSource, create_topic

    settings = dict(kafka.settings)
    create_topic(kafka.bootstrap, kafka.topic, KAFKA_PARTITIONS, settings)
    if dead_letters is None:
        create_topic(kafka.bootstrap, f"{kafka.topic}.dead", 1, settings)
        dead_letters = KafkaDeadLetters(KafkaSink(kafka.bootstrap, f"{kafka.topic}.dead", settings))
    has_ids = {"user_id", "item_id"} <= {f.name for f in fields}   # Criteo-like data sets have neither
    return (kind or KafkaSource)(kafka.bootstrap, kafka.topic, kafka.group, fields, dead_letters, settings,
                                 idle_timeout=kafka.idle_timeout, require_ids=has_ids, max_delay=kafka.max_delay,
                                 **options)


def feature_specs(config: FreshrecConfig, fields: Sequence[Field],
                  content: ItemContent | None = None) -> list[FeatureSpec]:
    """One spec per field the model learns from (not the join key or `kind`), with `model.dim` and
    the tables of `features.fields`, then with `features.content` the columns of the items' `content`
    (`item_content_of`); `ConfigError` for an override naming no field of the stream, or for
    `features.content` without content (no text, or a command that does not read it)."""
    join = join_config(config)
    skip = {*(join.key_columns if join else ()), "kind"}
    specs = [s for s in default_specs(fields, dim=config.model.dim) if s.name not in skip]
    unknown = set(config.features.fields) - {s.name for s in specs}
    if unknown:
        raise ConfigError([f"features.fields.{name}: no such field in the stream (fields: "
                           f"{', '.join(s.name for s in specs)})" for name in sorted(unknown)])
    tables = {name: override.table for name, override in config.features.fields.items()}
    specs = [replace(s, table=tables[s.name]) if s.name in tables else s for s in specs]
    if config.features.content:
        if content is None:
            raise ConfigError(["features.content: no item content here (freshrec run reads it: from content.items, "
                               "or MovieLens' titles and genres)"])
        specs += content.specs()
    return specs


def model_config(config: FreshrecConfig) -> ModelConfig:
    """The `ModelConfig` subclass of `model.name` (e.g. `FMConfig`) from the `model` and `embedding`
    sections (of a config without `problems()`).

    >>> model_config(FreshrecConfig())
    FMConfig(dim=16, lr=None, init_std=0.01, seed=0, admit_after=1, ttl_seconds=None, capacity=None, loss='bce', \
initial_accumulator=0.1, ordinal_levels=(), row_dtype='float32', linear_lr=None)
    """
    model, embedding = config.model, config.embedding
    config_class = MODELS[model.name][1]
    names = {f.name for f in dataclasses.fields(config_class)}
    extra = {"ftrl": True} if embedding.optimizer == "ftrl" else {}
    if "linear_lr" in names:
        extra["linear_lr"] = embedding.linear_lr
    for key in ("checkpoint_towers", "hidden", "cross_layers"):
        if key in names:
            extra[key] = getattr(model, key)
    return config_class(dim=model.dim, lr=model.lr, seed=model.seed, admit_after=model.admit_after,
                        ttl_seconds=model.ttl, capacity=model.capacity, loss=model.loss,
                        initial_accumulator=embedding.initial_accumulator,
                        ordinal_levels=model.ordinal_levels, row_dtype=embedding.row_dtype, **extra)


def engine_config(config: FreshrecConfig, publish: bool = True) -> EngineConfig:
    """The `DataFlowEngine`'s settings: `training`, `sync`, `log`, `features.target`, `model.seed`."""
    t = config.training
    return EngineConfig(batch_size=t.online_batch_size, batch_window=t.online_batch_window,
                        checkpoint_events=t.checkpoint_events, publish=publish,
                        retrain_events=t.offline_events, retrain_seconds=t.offline_interval,
                        sync=SyncConfig(sync_interval=config.sync.sync_interval,
                                        full_interval=config.sync.full_interval),
                        trainer=trainer_config(config), log_roll_bytes=config.log.roll_bytes,
                        log_roll_seconds=config.log.roll_seconds, log_retention=config.log.retention,
                        target=config.features.target,
                        share=config.sync.share)


def offline_config(config: FreshrecConfig) -> OfflineConfig:
    """Offline retraining: `training.epochs`, `holdout_fraction`, `patience`, `warm_start`, `offline_window`."""
    t = config.training
    return OfflineConfig(epochs=t.epochs, holdout_fraction=t.holdout_fraction, patience=t.patience,
                         warm_start=t.warm_start, seed=config.model.seed, window=t.offline_window)


def fusion_config(config: FreshrecConfig) -> FusionConfig:
    """`fusion`: the strategy and the Hedge settings."""
    f = config.fusion
    return FusionConfig(strategy=f.strategy, window=f.window_events, eta=f.eta)


def join_config(config: FreshrecConfig) -> JoinConfig | None:
    """The joiner's settings, None when `join.window` is null (no join)."""
    j = config.join
    if j.window is None:
        return None
    return JoinConfig(window=j.window, allowed_lateness=j.allowed_lateness, key=j.key)


def serve_config(config: FreshrecConfig, alerts: bool = False) -> ServeConfig:
    """The HTTP app's limits, timeouts and tokens (read from `serve.admin_token_env` and
    `serve.events_token_env`), and the experiment's arms; with `alerts` (a server alone), the
    staleness alert of `alerts.staleness`."""
    from freshrec.serve import ServeConfig  # the HTTP stack loads only where something serves

    s = config.serve
    try:
        events_token = s.events_token()
    except ValueError as error:
        raise ConfigError([str(error)]) from None
    missing = [f"serve.{key}: no file {path}" for key, path in (("tls_certfile", s.tls_certfile),
                                                                ("tls_keyfile", s.tls_keyfile))
               if path is not None and not path.is_file()]
    if missing:
        raise ConfigError(missing)
    return ServeConfig(max_candidates=s.max_candidates, max_body_bytes=s.max_body_bytes,
                       recommend_candidates=s.recommend_candidates, max_new_ids=s.max_new_ids,
                       retrieval_reindex=s.retrieval_reindex,
                       admin_token=s.admin_token(),
                       events_token=events_token, read_timeout=s.read_timeout,
                       keep_alive_timeout=s.keep_alive_timeout, max_connections=s.max_connections,
                       max_client_rate=s.max_client_rate,
                       shutdown_timeout=s.shutdown_timeout, experiment=config.experiment if config.experiment.arms
                       else None, tls_certfile=str(s.tls_certfile) if s.tls_certfile else None,
                       tls_keyfile=str(s.tls_keyfile) if s.tls_keyfile else None,
                       staleness_alert=config.alerts.staleness if alerts else None,
                       alert_webhook=config.alerts.webhook if alerts else None)


def training_device(config: FreshrecConfig, available: bool) -> str:
    """Where the online model learns (`gpu.device`; auto: cuda when `gpu.count` >= 1 and a GPU is
    `available`); ConfigError when a GPU is named and none is available.

    >>> from freshrec.config import parse_config
    >>> training_device(parse_config({"gpu": {"type": "A100", "count": 8}}), available=True)
    'cuda'
    >>> training_device(parse_config({"gpu": {"count": 1}}), available=False)
    'cpu'
    """
    device = config.gpu.device
    if device == "auto":
        return "cuda" if config.gpu.count >= 1 and available else "cpu"
    if device.startswith("cuda") and not available:
        raise ConfigError([f"gpu.device: {device} asked for (--device), but torch sees no CUDA device here"])
    return device


def worker_device(config: FreshrecConfig, local_rank: int, gpus: int) -> str:
    """Where rank `local_rank` (counted on its machine) of a worker group learns: when the run
    learns on a GPU (`training_device`), its own one, `cuda:LOCAL_RANK`, else the CPU; ConfigError
    when the machine has no GPU for it (`gpus`: how many it has).

    >>> from freshrec.config import parse_config
    >>> worker_device(parse_config({"gpu": {"device": "cuda"}}), 1, gpus=2)
    'cuda:1'
    >>> worker_device(parse_config({"gpu": {"count": 2}}), 1, gpus=0)
    'cpu'
    """
    device = training_device(config, gpus > 0)
    if device == "cpu":
        return device
    if local_rank >= gpus:
        raise ConfigError([f"training.workers: each worker learns on a GPU of its own (gpu.device {device}), and "
                           f"this machine has {gpus}: run at most {gpus} worker(s) on it, or add --device cpu"])
    return f"cuda:{local_rank}"


def trainer_config(config: FreshrecConfig, available: bool | None = None) -> TrainerConfig:
    """The online trainer's settings: `model.seed`, `training.dense_lr`, the device and `gpu.precision` (`available`:
    whether a GPU is, None: ask torch)."""
    available = torch.cuda.is_available() if available is None else available
    device = training_device(config, available)
    precision = config.gpu.precision
    if precision == "fp16" and device == "cpu":
        raise ConfigError(["gpu.precision: fp16 needs a GPU (its gradient scaler); bf16 runs on the CPU too"])
    return TrainerConfig(seed=config.model.seed, device=device, precision=precision,
                         dense_lr=config.training.dense_lr)


def gpu_note(config: FreshrecConfig, available: bool) -> str | None:
    """Where the online model learns, in one line, when the `gpu` block asks for anything.

    >>> from freshrec.config import parse_config
    >>> gpu_note(parse_config({"gpu": {"type": "A100", "count": 8}}), available=True)
    'gpu: 8 x A100 asked for: learning on cuda (one GPU per trainer), fp32'
    """
    gpu = config.gpu
    if gpu.count == 0 and gpu.type == "none" and not gpu.autoscale and gpu.device == "auto":
        return None
    device = training_device(config, available)
    scaling = ", autoscale" if gpu.autoscale else ""
    asked = f"{gpu.count} x {gpu.type}{scaling} asked for: " if gpu.count or gpu.type != "none" else ""
    where = "no GPU on this machine: learning on the CPU" if device == "cpu" and gpu.count else f"learning on {device}"
    if device != "cpu":
        where += " (one GPU per trainer)"
    return f"gpu: {asked}{where}, {gpu.precision}"


def item_content_of(config: FreshrecConfig) -> ItemContent | None:
    """The items' content vectors (`content.items`, or MovieLens' titles and genres) where a model reads them
    (`features.content`, or `retrieval.content` of an enabled two-tower), else None; through the content cache
    (an unchanged item is never encoded twice). `ConfigError` naming `content.items` for a file it cannot read."""
    r, items = config.retrieval, config.content.items
    if not (config.features.content or (r.enabled and r.content)):
        return None
    try:
        if items is not None:
            return item_content(read_items(items, config.content.text_columns))
        if config.source.format == "movielens-100k" and config.source.data is not None:
            return item_content(movielens_items(config.source.data))
    except (OSError, ValueError) as error:
        raise ConfigError([f"content.items: {error}"]) from None
    return None


def retrieval_stage(config: FreshrecConfig, fields: Sequence[Field],
                    content: ItemContent | None = None) -> RetrievalStage | None:
    """The two-tower stage of `retrieval` (None unless `retrieval.enabled`) over a stream of `fields`, its item
    tower reading `content` (`item_content_of`) with `retrieval.content`."""
    r = config.retrieval
    if not r.enabled:
        return None
    content = content if r.content else None
    model = TwoTowerConfig(dim=r.dim, out_dim=r.out_dim, hidden=r.hidden, temperature=r.temperature,
                           id_dropout=r.id_dropout, seed=config.model.seed,
                           history_positives=r.positives == "labelled")   # what the learner remembers
    training = RetrievalConfig(negatives=r.negatives, lr=r.lr, seed=config.model.seed)
    learner = RetrievalLearner.build(fields, content, r.history, model, training)
    return RetrievalStage(learner, r.positives, r.batch_size)
