"""`lookahead`: prepare the batches of later units in a worker thread while the caller consumes
earlier ones, pausing at the units where the caller needs the model to itself.

A unit is anything with `batches` (a sequence of `Batch`) and `hold` (bool): a chunk of the stream
cut into micro-batches. The generator yields `Prepared(batch, value, error)` for each batch in
order (`value = prepare(batch)`, or the exception `prepare` raised for that batch alone), then
`UnitEnd(unit, held)` after the unit's last batch. `held` is True when the worker stopped after
this unit (the unit's `hold`, `hold_at(unit)` True, or `hold_request` set meanwhile) and waits
until the caller asks for the next item: between the two, nothing of a later unit has been
prepared, so the caller may checkpoint, publish or evict on a model that has seen exactly the units
up to this one.

>>> from types import SimpleNamespace
>>> units = [SimpleNamespace(batches=[1, 2], hold=False), SimpleNamespace(batches=[3], hold=True)]
>>> [(type(i).__name__, i.value if hasattr(i, "value") else i.held) for i in lookahead(units, lambda b: 10 * b)]
[('Prepared', 10), ('Prepared', 20), ('UnitEnd', False), ('Prepared', 30), ('UnitEnd', True)]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["Prepared", "UnitEnd", "lookahead"]

WORKER_NAME = "freshrec-lookahead"


class Prepared(NamedTuple):
    """A batch and what `prepare` made of it, or the error it raised (then `value` is None)."""

    batch: Any
    value: Any
    error: Exception | None


class UnitEnd(NamedTuple):
    """The last batch of `unit` has been yielded; `held`: the worker waits for the caller."""

    unit: Any
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
                for batch in unit.batches:
                    try:
                        item = Prepared(batch, self.prepare(batch), None)
                    except Exception as error:  # this batch alone fails; the caller decides
                        item = Prepared(batch, None, error)
                    if not self.offer(item):
                        return
                due = self.hold_at is not None and self.hold_at(unit)   # called for every unit: it counts
                held = due or bool(unit.hold) or (self.hold_request is not None and self.hold_request.is_set())
                if held and self.hold_request is not None:
                    self.hold_request.clear()
                if not self.offer(UnitEnd(unit, held)) or (held and not self.wait_resume()):
                    return
            self.offer(None)
        except BaseException as error:  # the units' own failure: raised again in the caller's thread
            self.offer(error)


def lookahead(units: Iterable, prepare: Callable[[Any], Any], ahead: int = 32,
              hold_request: threading.Event | None = None,
              hold_at: Callable[[Any], bool] | None = None) -> Iterator[Prepared | UnitEnd]:
    """Yield `Prepared` items and `UnitEnd` markers for `units`, preparing up to `ahead` items in a
    worker thread (`hold_at(unit)`, called in it after each unit: whether to hold there). An error
    raised by `units` is raised here; closing the generator stops the worker (once `units` yields
    its next unit)."""
    worker = _Worker(prepare, ahead, hold_request, hold_at)
    thread = threading.Thread(target=worker.run, args=(units,), name=WORKER_NAME, daemon=True)
    thread.start()
    try:
        while (item := worker.ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, UnitEnd) and item.held:
                worker.resume.set()
    finally:
        worker.stop.set()
        thread.join()
