"""`freshrec run`: the whole loop in one process (`DataFlowEngine` + the server), restartable.

The source is a data set replayed in time order (`--format`, the embedded default) or a Kafka
topic carrying events of that data set's shape (`--source kafka`; `produce` fills one). State lives
under `--state`: a run that finds checkpoints there continues from the newest one. SIGINT or
SIGTERM: the engine stops reading, learns the chunks already read, checkpoints, stops an offline
retraining in progress (at its next micro-batch: nothing of it is published) and exits 0; at the
stream's end a retraining in progress is waited for and published.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from freshrec.config import FreshrecConfig
from freshrec.engine.build import (
    engine_config,
    feature_specs,
    fusion_config,
    item_content_of,
    join_config,
    model_config,
    offline_config,
    retrieval_stage,
)
from freshrec.engine.dataflow import DataFlowEngine
from freshrec.engine.hybrid import OfflineSchedule
from freshrec.events.source import Source
from freshrec.features.content import ItemContent
from freshrec.join import Joiner
from freshrec.models import build_model

__all__ = ["build_engine", "run"]


def build_engine(source: Source, config: FreshrecConfig, state: Path, publish: bool = True,
                 content: ItemContent | None = None) -> DataFlowEngine:
    """The engine of `config` over `source`, state under `state`, restored from its newest checkpoint;
    with `retrieval.enabled`, its two-tower stage (`engine.retrieval`); with offline retraining
    (`training.offline_interval` / `offline_events`), its `OfflineSchedule`
    as `engine.retrain`. `content`: the items' content where the caller has built it already (its server
    reads it too), else `item_content_of(config)`."""
    content = content if content is not None else item_content_of(config)
    specs = feature_specs(config, source.fields, content)
    join = join_config(config)
    model = model_config(config)
    engine = DataFlowEngine(source, specs, lambda: build_model(config.model.name, specs, model), state,
                            engine_config(config, publish), Joiner(join) if join is not None else None,
                            content if config.features.content else None)
    engine.retrieval = retrieval_stage(config, source.fields, content)
    engine.restore()
    t = config.training
    if t.offline_interval is not None or t.offline_events is not None:
        fusion = fusion_config(config)
        schedule = engine.retrain = OfflineSchedule(engine, offline_config(config), fusion.strategy,
                                                    fusion.window, fusion.eta)
        engine.on_scored, engine.publish_meta = schedule.observe, schedule.meta
    return engine


def run(source: Source, config: FreshrecConfig, state: str | Path, on_chunk: Callable | None = None,
        publish: bool = True, content: ItemContent | None = None) -> dict:
    """Restore if there is a checkpoint, run until the source ends or a signal comes, return figures
    (`content`: as `build_engine`'s)."""
    engine = build_engine(source, config, Path(state), publish, content)
    schedule = engine.retrain

    def after_chunk(engine: DataFlowEngine, summary) -> None:
        if schedule is not None:
            schedule.poll(engine)
        if on_chunk is not None:
            on_chunk(engine, summary)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    failed = True
    try:
        figures = engine.run(stop, after_chunk)
        failed = False
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        close = getattr(source, "close", None)
        if close is not None:
            close()
        if schedule is not None:
            schedule.close(engine, cancel=failed or stop.is_set())   # exit now, not after the retraining
    if schedule is not None:
        figures["offline"] = {"published": schedule.published, "skipped": schedule.skipped,
                              "rebased": schedule.rebased, "cancelled": schedule.cancelled}
    figures["stopped_by_signal"] = stop.is_set()
    figures["state"] = str(state)
    return figures
