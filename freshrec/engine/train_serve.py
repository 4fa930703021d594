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
>>> trainer = OnlineTrainer(build_model("deepfm", specs))   # publishes at every chunk (fused FM, LR: where they hold)
>>> publisher = Publisher(ModelRegistry(tempfile.mkdtemp()), trainer.model, sim.fields)
>>> summary = learn_live(sim, LiveQueue(sim.fields), FeaturePipeline(specs), trainer, publisher, threading.Event(),
...                      follow=False)                # stop once the replay is done
>>> summary.rows, publisher.published
(1000, {'full': 2, 'delta': 1})
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable

from freshrec.engine.loop import Stages, Work, dead_letter_failures, publish_when_held, run_loop
from freshrec.engine.summary import IngestSummary
from freshrec.engine.sync import Publisher
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import EventChunk
from freshrec.events.live import LiveQueue
from freshrec.events.with_live import WithLive
from freshrec.features import FeaturePipeline
from freshrec.share import ShareWriter
from freshrec.train import OnlineTrainer

__all__ = ["Publisher", "learn_live", "serve_until_signal", "train_and_serve"]


def learn_live(stream: Iterable[EventChunk] | None, live: LiveQueue, pipeline: FeaturePipeline,
               trainer: OnlineTrainer, publisher: Publisher, stop: threading.Event, batch_size: int = 512,
               on_chunk: Callable[[Work, IngestSummary], None] | None = None, follow: bool = True,
               dead_letters: DeadLetterSink | None = None, batch_window: float | None = None,
               share: ShareWriter | None = None) -> IngestSummary:
    """Learn from `stream` (optional, finite) and the `live` queue (waiting events first) until
    `stop` is set (without `follow`: or the stream ends), publishing what is due after the chunks
    where the trainer holds (and the dense weights to `share` after every chunk, where the tables
    are shared); then publish a last full snapshot (with its delta, for the servers that follow).
    A batch the trainer cannot learn goes to `dead_letters` and the loop goes on."""
    source = WithLive(stream if stream is not None else (), live, follow)
    summary = IngestSummary()
    learned = [0]

    def after(work: Work, steps: list[dict], held: bool) -> None:
        dead_letter_failures(work, steps, dead_letters)
        if work.examples is not None:
            publisher.observe(work.examples)
            learned[0] += len(work.examples)
            if share is not None:
                share.publish(learned[0], work.examples.entered)
        publish_when_held(publisher, trainer, held)
        if on_chunk is not None and work.whole is not None:
            on_chunk(work, summary)
    stages = Stages(source, pipeline, trainer, batch_size, batch_window=batch_window)
    run_loop(stages, stop, after, summary)
    publisher.try_publish("full")
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
                    batch_size: int = 512, on_chunk=None, dead_letters: DeadLetterSink | None = None,
                    batch_window: float | None = None) -> IngestSummary:
    """Run the trainer thread and serve `app` on host:port until SIGINT/SIGTERM; then the trainer
    learns the chunks already read, publishes a last snapshot, and the figures are returned."""
    import uvicorn

    from freshrec.serve.server import uvicorn_config

    stop = threading.Event()
    result: list[IngestSummary | BaseException] = []
    server = uvicorn.Server(uvicorn_config(app, host, port, lifespan="on"))

    def train() -> None:
        try:
            result.append(learn_live(stream, live, pipeline, trainer, publisher, stop, batch_size, on_chunk,
                                     dead_letters=dead_letters, batch_window=batch_window))
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
