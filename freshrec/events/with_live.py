"""`WithLive`: a stream with the events posted to the server (a `LiveQueue`) handed out between its
chunks, one `Source` for the loop; its positions hold the live queue's row when the queue is
durable (a journal), so a checkpoint says which posted events its model has learned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from freshrec.events.event import EventChunk
from freshrec.events.live import LiveQueue
from freshrec.events.source import Position, Source

__all__ = ["LIVE_KEY", "WithLive"]

LIVE_KEY = "live"
"""The key of the live queue's row in a `WithLive` position (beside the stream's own keys)."""


class WithLive:
    """A `Source` that hands out `source`'s chunks and, between them, the chunks waiting in `live`
    (events posted to the server). When `source` ends, `on_end` is called; then, with `follow`,
    the live chunks go on until `close()`, an empty chunk after each `tick` seconds of quiet (so
    the consumer can publish what is due and see a stop request); without it, the queue is closed
    and the chunks already waiting are handed out.

    Positions are `source`'s; with a durable `live` queue (a journal) they also hold the live
    queue's row as `"live"`: the rows handed out so far, so a checkpoint's position says which live
    events its model has learned, and `seek` goes back to it in both (a position without `"live"`,
    e.g. from a run that did not serve, resumes the live queue at its committed row). Without a
    journal, live events cannot be replayed: `seek` moves `source` only.

    >>> import numpy as np, pyarrow as pa
    >>> from freshrec.events.event import Event
    >>> from freshrec.events.source import TableReplay
    >>> replay = TableReplay(pa.table({"ts": [1.0, 2.0], "user_id": ["u", "v"], "item_id": ["i", "j"]}),
    ...                      np.arange(2), name="demo", batch_size=1)
    >>> live = LiveQueue(replay.fields)
    >>> _ = live.put([Event("e1", 3.0, "w", "k", label=1.0)])
    >>> source = WithLive(replay, live, follow=False)
    >>> [(c.source, len(c)) for c in source], source.position(), live.closed
    ([('live', 1), ('demo', 1), ('demo', 1)], {'row': 2}, True)
    """

    def __init__(self, source: Source | Iterable[EventChunk], live: LiveQueue, follow: bool = True, tick: float = 0.2,
                 on_end: Callable[[], None] | None = None) -> None:
        self.source, self.live, self.follow, self.tick, self.on_end = source, live, follow, tick, on_end
        self.name = getattr(source, "name", live.name)   # any iterable of chunks, or a Source
        self.fields = getattr(source, "fields", live.fields)
        self.has_event_time = getattr(source, "has_event_time", True)

    def __iter__(self) -> Iterator[EventChunk]:
        chunks = iter(self.source)
        while True:   # the live chunks before the next stream chunk is read: positions stay exact
            yield from self._waiting()
            if (chunk := next(chunks, None)) is None:
                break
            yield chunk
        if self.on_end is not None:
            self.on_end()
        if not self.follow:
            self.live.close()
        quiet = self.live.empty()
        while (chunk := self.live.poll(timeout=self.tick)) is not None or not self.live.closed:
            yield quiet if chunk is None else chunk

    def _waiting(self) -> Iterator[EventChunk]:
        while (chunk := self.live.poll(timeout=0.0)) is not None:
            yield chunk

    def keep_alive(self) -> None:
        """`source`'s `keep_alive`, where it has one (a Kafka consumer's: the loop is busy)."""
        keep_alive = getattr(self.source, "keep_alive", None)
        if keep_alive is not None:
            keep_alive()

    def close(self) -> None:
        """Close the live queue (no more posts) and `source`, where it has a `close`."""
        self.live.close()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def position(self) -> Position:
        position = dict(self.source.position())
        if self.live.durable:
            position[LIVE_KEY] = self.live.position()["row"]
        return position

    def commit(self, position: Position) -> None:
        self.source.commit(_without_live(position))
        if self.live.durable and LIVE_KEY in position:
            self.live.commit({"row": position[LIVE_KEY]})

    def committed(self) -> Position:
        committed = dict(self.source.committed())
        if self.live.durable:
            committed[LIVE_KEY] = self.live.committed()["row"]
        return committed

    def seek(self, position: Position) -> None:
        self.source.seek(_without_live(position))
        if self.live.durable:
            self.live.seek({"row": position[LIVE_KEY]} if LIVE_KEY in position else self.live.committed())


def _without_live(position: Position) -> Position:
    return {k: v for k, v in position.items() if k != LIVE_KEY}
