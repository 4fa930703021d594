"""`ModelSwitcher`: the article's hot switch. `swap(new)` replaces the serving model in one
assignment; a request holds a lease on the model it started with, so in-flight requests finish on
it; `drained(old)` tells when the last of them is done, after which the old model may be released
(dropped) or, for delta updates, brought up to date and reused.

>>> switcher = ModelSwitcher("v1")
>>> with switcher.lease() as model:
...     old = switcher.swap("v2")          # a swap while a request is in flight
...     model, switcher.current, switcher.drained(old)
('v1', 'v2', False)
>>> switcher.drained(old), switcher.swaps
(True, 1)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["ModelSwitcher"]

T = TypeVar("T")


class ModelSwitcher(Generic[T]):
    """Holds the serving model; thread-safe; leases count in-flight users per model."""

    def __init__(self, model: T | None = None) -> None:
        self._current = model
        self._leases: dict[int, int] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.swaps = 0

    @property
    def current(self) -> T | None:
        return self._current

    @contextmanager
    def lease(self) -> Iterator[T]:
        """The current model, kept alive and unchanged (by this switcher) until the block ends."""
        with self._lock:
            model = self._current
            if model is None:
                raise LookupError("no model is loaded yet")
            key = id(model)
            self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield model
        finally:
            with self._lock:
                left = self._leases[key] - 1
                if left:
                    self._leases[key] = left
                else:
                    del self._leases[key]
                    self._idle.notify_all()

    def swap(self, new: T) -> T | None:
        """Serve `new` from now on; returns the previous model (still leased by in-flight requests)."""
        with self._lock:
            old, self._current = self._current, new
            self.swaps += 1
        return old

    def drained(self, model: T | None, timeout: float = 0.0) -> bool:
        """Whether no request holds `model` (waiting up to `timeout` seconds for that)."""
        if model is None:
            return True
        deadline = time.monotonic() + timeout
        with self._lock:
            while id(model) in self._leases:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True
