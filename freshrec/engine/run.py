"""`freshrec run`: the whole loop in one process (`DataFlowEngine` + the server), restartable.

The source is a data set replayed in time order (`--format`, the embedded default) or a Kafka
topic carrying events of that data set's shape (`--source kafka`; `produce` fills one). State lives
under `--state`: a run that finds checkpoints there continues from the newest one. SIGINT or
SIGTERM: the engine stops reading, finishes the chunk in hand, checkpoints and exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from freshrec.engine.dataflow import DataFlowEngine, EngineConfig
from freshrec.engine.hybrid import OfflineSchedule
from freshrec.engine.sync import SyncConfig
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.kafka import KafkaDeadLetters, KafkaSink, KafkaSource, create_topic
from freshrec.events.source import Source
from freshrec.features import default_specs
from freshrec.join import JoinConfig, Joiner
from freshrec.models import ModelConfig, build_model
from freshrec.train import TrainerConfig
from freshrec.train.offline import OfflineConfig

__all__ = ["KafkaOptions", "RunOptions", "kafka_source", "run"]


@dataclass(frozen=True)
class KafkaOptions:
    """Where `--source kafka` reads: brokers, topic (and `<topic>.dead` for dead letters), group."""

    bootstrap: str
    topic: str = "freshrec.events"
    group: str = "freshrec-trainer"
    partitions: int = 4
    idle_timeout: float | None = None
    settings: tuple[tuple[str, str], ...] = ()   # librdkafka settings: SASL, TLS...


@dataclass(frozen=True)
class RunOptions:
    """The engine's settings from the command line."""

    model: str
    model_config: ModelConfig
    state: Path
    batch_size: int = 512
    checkpoint_events: int = 50_000
    sync_interval: float = 1.0
    publish: bool = True
    join: JoinConfig | None = None
    offline_interval: float | None = None   # event time between offline retrainings (None: never)
    offline_events: int | None = None       # or every this many events
    offline: OfflineConfig | None = None
    fusion: str = "none"                    # "rebase": the online model takes each offline model; "hedge": blend


def kafka_source(options: KafkaOptions, fields, dead_letters: DeadLetterSink | None = None) -> KafkaSource:
    """A consumer of the topic (created if missing); bad messages go to `<topic>.dead`."""
    settings = dict(options.settings)
    create_topic(options.bootstrap, options.topic, options.partitions, settings)
    if dead_letters is None:
        create_topic(options.bootstrap, f"{options.topic}.dead", 1, settings)
        dead_letters = KafkaDeadLetters(KafkaSink(options.bootstrap, f"{options.topic}.dead", settings))
    has_ids = {"user_id", "item_id"} <= {f.name for f in fields}   # Criteo-like data sets have neither
    return KafkaSource(options.bootstrap, options.topic, options.group, fields, dead_letters, settings,
                       idle_timeout=options.idle_timeout, require_ids=has_ids)


def run(source: Source, options: RunOptions, on_chunk: Callable | None = None) -> dict:
    """Restore if there is a checkpoint, run until the source ends or a signal comes, return figures."""
    specs = default_specs(source.fields, dim=options.model_config.dim)
    config = EngineConfig(batch_size=options.batch_size, checkpoint_events=options.checkpoint_events,
                          publish=options.publish, sync=SyncConfig(sync_interval=options.sync_interval),
                          trainer=TrainerConfig(seed=options.model_config.seed),
                          retrain_events=options.offline_events, retrain_seconds=options.offline_interval)
    joiner = Joiner(options.join) if options.join is not None else None
    features = [s for s in specs if s.name not in (*(options.join.key_columns if options.join else ()), "kind")]
    engine = DataFlowEngine(source, features, lambda: build_model(options.model, features, options.model_config),
                            options.state, config, joiner)
    engine.restore()
    schedule = None
    if options.offline_interval is not None or options.offline_events is not None:
        schedule = engine.retrain = OfflineSchedule(engine, options.offline, options.fusion)
        engine.on_batch, engine.publish_meta = schedule.observe_batch, schedule.meta

    def after_chunk(engine: DataFlowEngine, summary) -> None:
        if schedule is not None:
            schedule.poll(engine)
        if on_chunk is not None:
            on_chunk(engine, summary)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        figures = engine.run(stop, after_chunk)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        close = getattr(source, "close", None)
        if close is not None:
            close()
        if schedule is not None:
            schedule.close(engine)
    if schedule is not None:
        figures["offline"] = {"published": schedule.published, "skipped": schedule.skipped,
                              "rebased": schedule.rebased}
    figures["stopped_by_signal"] = stop.is_set()
    figures["state"] = str(options.state)
    return figures
