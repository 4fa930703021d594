"""Token buckets of the server's rate limits: `TokenBucket` (`rate` tokens a second, up to `burst` at
once), used for the ids POST /events may introduce (a client, or a bug, posting events for hundreds
of thousands of users or items the model has never seen cannot grow the trainer's tables without
bound: a batch past it is refused whole, 429), and `ClientRates`, one bucket of requests per client
address (`serve.max_client_rate`).

>>> budget = TokenBucket(rate=100.0, burst=150, clock=lambda: 0.0)
>>> budget.take(120), budget.take(40), budget.wait(40)
(True, False, 0.1)
>>> rates = ClientRates(rate=2.0, clock=lambda: 0.0)          # bursts of 2 s' worth: 4 requests
>>> [rates.refused("10.0.0.1") for _ in range(5)], rates.refused("10.0.0.2")
([None, None, None, None, 0.5], None)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ClientRates", "TokenBucket"]

KEEP_CLIENTS = 10_000   # client buckets kept; past it, the full ones (clients gone quiet) are dropped


class TokenBucket:
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


class ClientRates:
    """A `TokenBucket` of requests per client address: `rate` a second, in bursts of two seconds' worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self._buckets: dict[str, TokenBucket] = {}

    def refused(self, client: str) -> float | None:
        """None when `client` may make one more request now, else the seconds until it may."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= KEEP_CLIENTS:
                self._buckets = {k: b for k, b in self._buckets.items() if b.wait(b.burst) > 0}
            bucket = self._buckets[client] = TokenBucket(self.rate, max(1, int(2 * self.rate)), self.clock)
        return None if bucket.take(1) else bucket.wait(1)
