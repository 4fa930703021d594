"""What the durable writers (the registry's versions in `snapshot/`, the event log in `log/`) share:
fsync helpers, the `Backoff` between retries of a failed write, `WriteBehind` (writes in order on a
thread of their own) and the `WRITE_FAILURES` counter (Prometheus, on `WRITE_FAULTS`, a registry of
its own that the server's /metrics includes). A leaf module that imports nothing of ours.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "a").write_text("x")
1
>>> fsync_file(folder / "a"); fsync_dir(folder)
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

__all__ = ["WRITE_FAILURES", "WRITE_FAULTS", "Backoff", "WriteBehind", "fsync_dir", "fsync_file"]

WRITE_FAULTS = CollectorRegistry()
WRITE_FAILURES = Counter("freshrec_write_failures", "Failed writes to durable storage by target (registry, "
                         "log); each is retried with backoff", ["target"], registry=WRITE_FAULTS)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new, renamed or deleted files) durable."""
    fsync_file(path)


@dataclass
class Backoff:
    """When to try a failed write again: `initial` seconds after the first of consecutive
    failures, twice as long after each next one, at most `cap`; `succeeded()` starts over.

    >>> backoff = Backoff(initial=1.0, cap=4.0)
    >>> [backoff.failed(now=10.0) for _ in range(4)], backoff.ready(13.9), backoff.ready(14.0)
    ([1.0, 2.0, 4.0, 4.0], False, True)
    >>> backoff.succeeded(); backoff.failures, backoff.ready(0.0)
    (0, True)
    """

    initial: float = 1.0
    cap: float = 60.0
    failures: int = 0
    ready_at: float = -math.inf

    def delay(self) -> float:
        """The wait the next failure brings."""
        return min(self.cap, self.initial * 2.0 ** min(self.failures, 64))

    def failed(self, now: float) -> float:
        """Count a failure at clock reading `now`; returns the wait before the next try."""
        wait = self.delay()
        self.failures += 1
        self.ready_at = now + wait
        return wait

    def succeeded(self) -> None:
        self.failures, self.ready_at = 0, -math.inf

    def ready(self, now: float) -> bool:
        """Whether the wait after the last failure is over at clock reading `now`."""
        return now >= self.ready_at


class WriteBehind:
    """Writes run one at a time, in the order given, on a thread of their own, behind the caller:
    the caller captures what to write (copies) and goes on while the files are written, hashed and
    fsynced. `submit` waits while `depth` writes are queued (bounded memory); an exception raised by
    a write is raised again in the caller's thread by the next `submit`, `drain` or `close` (a write
    that must survive its failures catches them itself).

    >>> done = []
    >>> writes = WriteBehind()
    >>> for n in range(3):
    ...     writes.submit(lambda n=n: done.append(n))
    >>> writes.drain(); done
    [0, 1, 2]
    >>> writes.submit(lambda: 1 / 0)
    >>> writes.close()
    Traceback (most recent call last):
    ...
    ZeroDivisionError: division by zero
    """

    def __init__(self, depth: int = 2, name: str = "freshrec-writes") -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._queued: deque[Future] = deque()

    def submit(self, write: Callable[[], object]) -> None:
        """Queue `write()` after the writes before it."""
        self._settle(self.depth - 1)
        self._queued.append(self._pool.submit(write))

    def drain(self) -> None:
        """Wait until every queued write is done."""
        self._settle(0)

    def close(self) -> None:
        """Drain, then stop the thread (also when a write failed: its error is raised)."""
        try:
            self.drain()
        finally:
            self._queued.clear()
            self._pool.shutdown(wait=True)

    def _settle(self, keep: int) -> None:
        while len(self._queued) > keep:
            self._queued.popleft().result()
