"""`IdBudget`: a token bucket of the ids POST /events may introduce, so a client (or a bug) posting
events for hundreds of thousands of users or items the model has never seen cannot grow the
trainer's tables (and the process) without bound: `rate` new ids a second, up to `burst` at once.
A batch that would go past it is refused whole (429 with Retry-After), so nothing is half-taken.

>>> budget = IdBudget(rate=100.0, burst=150, clock=lambda: 0.0)
>>> budget.take(120), budget.take(40), budget.wait(40)
(True, False, 0.1)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["IdBudget"]


class IdBudget:
    """`take(n)` spends n tokens if there are as many (refilled at `rate` a second, at most `burst`)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: int) -> bool:
        with self._lock:
            self._refill()
            if n > self._tokens:
                return False
            self._tokens -= n
            return True

    def wait(self, n: int) -> float:
        """Seconds until `n` tokens are there (inf when n is over the burst: never at once)."""
        with self._lock:
            self._refill()
            return 0.0 if n <= self._tokens else float("inf") if n > self.burst else (n - self._tokens) / self.rate
