"""`lookahead`: prepare later units in a worker thread while the caller consumes earlier ones,
pausing at the units where the caller needs the model to itself.

A unit is anything with `hold` (bool): a chunk of the stream. The generator yields
`Prepared(unit, value, held)` for each unit in order (`value = prepare(unit)`; an error of
`prepare` or of `units` is raised in the caller). `held` is True when the worker stopped after
this unit (the unit's `hold`, `hold_at(unit)` True, or `hold_request` set meanwhile) and waits
until the caller asks for the next item: between the two, nothing of a later unit has been
prepared, so the caller may checkpoint, publish or evict on a model that has seen exactly the units
up to this one.

>>> from types import SimpleNamespace
>>> units = [SimpleNamespace(rows=[1, 2], hold=False), SimpleNamespace(rows=[3], hold=True)]
>>> [(item.value, item.held) for item in lookahead(units, lambda unit: sum(unit.rows))]
[(3, False), (3, True)]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["Prepared", "lookahead"]

WORKER_NAME = "freshrec-lookahead"


class Prepared(NamedTuple):
    """A unit, what `prepare` made of it, and whether the worker holds after it."""

    unit: Any
    value: Any
    held: bool


class _Worker:
    """The worker thread's side: prepares and offers items until the stream ends or the caller leaves."""

    def __init__(self, prepare: Callable, ahead: int, hold_request: threading.Event | None,
                 hold_at: Callable[[Any], bool] | None) -> None:
        self.prepare, self.hold_request, self.hold_at = prepare, hold_request, hold_at
        self.ready: queue.Queue = queue.Queue(maxsize=ahead)
        self.stop, self.resume = threading.Event(), threading.Event()

    def offer(self, item: Any) -> bool:
        """Queue `item` unless the caller has gone (then False)."""
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def wait_resume(self) -> bool:
        while not self.resume.wait(0.1):
            if self.stop.is_set():
                return False
        self.resume.clear()
        return True

    def run(self, units: Iterable) -> None:
        try:
            for unit in units:
                value = self.prepare(unit)
                due = self.hold_at is not None and self.hold_at(unit)   # called for every unit: it counts
                held = due or bool(unit.hold) or (self.hold_request is not None and self.hold_request.is_set())
                if held and self.hold_request is not None:
                    self.hold_request.clear()
                if not self.offer(Prepared(unit, value, held)) or (held and not self.wait_resume()):
                    return
            self.offer(None)
        except BaseException as error:  # raised again in the caller's thread
            self.offer(error)


def lookahead(units: Iterable, prepare: Callable[[Any], Any], ahead: int = 2,
              hold_request: threading.Event | None = None,
              hold_at: Callable[[Any], bool] | None = None) -> Iterator[Prepared]:
    """Yield a `Prepared` item for each of `units`, preparing up to `ahead` units in a worker thread
    (`hold_at(unit)`, called in it after each unit: whether to hold there). An error raised by
    `units` or `prepare` is raised here; closing the generator stops the worker (once `units`
    yields its next unit)."""
    worker = _Worker(prepare, ahead, hold_request, hold_at)
    thread = threading.Thread(target=worker.run, args=(units,), name=WORKER_NAME, daemon=True)
    thread.start()
    try:
        while (item := worker.ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.held:
                worker.resume.set()
    finally:
        worker.stop.set()
        thread.join()
