"""Train and serve in one process: the trainer thread learns from the replayed stream and the live
events posted to the server, publishing deltas; the server (uvicorn, main thread) follows them.

>>> import tempfile, threading
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> from freshrec.features import FeaturePipeline, default_specs
>>> from freshrec.models import build_model
>>> from freshrec.snapshot import ModelRegistry
>>> from freshrec.train import OnlineTrainer
>>> sim = Simulator(SimulatorConfig(batch_size=500, total_events=1000))
>>> specs = default_specs(sim.fields, dim=4)
>>> trainer = OnlineTrainer(build_model("fm", specs))
>>> publisher = Publisher(ModelRegistry(tempfile.mkdtemp()), trainer.model, sim.fields)
>>> stop = threading.Event(); stop.set()          # stop once the replay is done
>>> summary = learn_live(sim, LiveQueue(sim.fields), FeaturePipeline(specs), trainer, publisher, stop)
>>> summary.rows, publisher.published
(1000, {'full': 2, 'delta': 1})
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable

from freshrec.batch import Batch
from freshrec.engine.ingest import IngestSummary
from freshrec.engine.sync import Publisher
from freshrec.events.event import EventChunk
from freshrec.events.live import LiveQueue
from freshrec.features import FeaturePipeline
from freshrec.train import OnlineTrainer

__all__ = ["Publisher", "learn_live", "serve_until_signal", "train_and_serve"]


def learn_live(stream: Iterable[EventChunk] | None, live: LiveQueue, pipeline: FeaturePipeline,
               trainer: OnlineTrainer, publisher: Publisher, stop: threading.Event, batch_size: int = 512,
               on_batch: Callable[[Batch, IngestSummary], None] | None = None, tick: float = 0.05) -> IngestSummary:
    """Learn from `stream` (optional, finite) and the `live` queue (waiting events first), publish
    what is due after each chunk and every `tick` seconds, until `stop` is set and the replay is
    done; then publish a last full snapshot (with its delta, for the servers that follow)."""
    summary = IngestSummary()
    start = time.perf_counter()
    chunks = iter(stream) if stream is not None else None
    while True:
        chunk = live.poll(timeout=0.0) if chunks is not None else live.poll(timeout=tick)
        if chunk is None and chunks is not None:
            chunk = next(chunks, None)
            if chunk is None:
                chunks = None
        if chunk is not None and len(chunk):
            whole = pipeline.build(chunk)
            parts = whole.split(batch_size)
            summary.add(whole, len(parts))
            for batch in parts:
                trainer.learn(batch)
                if on_batch is not None:
                    on_batch(batch, summary)
            publisher.observe(chunk)
        publisher.maybe_publish()
        if stop.is_set() and chunks is None and chunk is None:
            break
    publisher.publish_full()
    summary.seconds = time.perf_counter() - start
    return summary


def serve_until_signal(server) -> None:
    """`server.run()` (uvicorn) until SIGINT or SIGTERM, then return normally. Uvicorn re-raises the
    signal it caught once it has shut down; handlers that ignore it are in place meanwhile."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda *_: None) for s in signals}
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train_and_serve(stream: Iterable[EventChunk] | None, live: LiveQueue, pipeline: FeaturePipeline,
                    trainer: OnlineTrainer, publisher: Publisher, app, host: str, port: int,
                    batch_size: int = 512, on_batch=None) -> IngestSummary:
    """Run the trainer thread and serve `app` on host:port until SIGINT/SIGTERM; then the trainer
    finishes the batch in hand, publishes a last snapshot, and the figures are returned."""
    import uvicorn

    stop = threading.Event()
    result: list[IngestSummary | BaseException] = []
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))

    def train() -> None:
        try:
            result.append(learn_live(stream, live, pipeline, trainer, publisher, stop, batch_size, on_batch))
        except BaseException as error:  # reported by the main thread; the server stops too
            result.append(error)
            server.should_exit = True

    trainer_thread = threading.Thread(target=train, name="freshrec-trainer", daemon=True)
    trainer_thread.start()
    serve_until_signal(server)
    stop.set()
    live.close()
    trainer_thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
