"""Dead letters: where malformed records go, with their position and reason, so none is lost.

A reader never stops for a bad record: it hands it to a `DeadLetterSink` and goes on.
Reasons are short codes (`column_count`, `not_a_number`, `missing_id`, `bad_time`,
`bad_label`, `bad_encoding`) with a human-readable `detail`; `counts` tallies them.

>>> sink = MemoryDeadLetters()
>>> sink.put(DeadLetter("criteo", 7, "bad_label", "label '2' is not 0 or 1", "2\\t1\\t..."))
>>> sink.total, dict(sink.counts)
(1, {'bad_label': 1})
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import orjson


@dataclass(frozen=True)
class DeadLetter:
    """A rejected record: source name, position (line number or offset), reason code, detail, raw text."""

    source: str
    position: int
    reason: str
    detail: str
    raw: str | None = None


class DeadLetterSink(Protocol):
    """Receives rejected records; `counts` and `total` report what was received."""

    counts: Counter

    @property
    def total(self) -> int: ...

    def put(self, letter: DeadLetter) -> None: ...

    def put_many(self, letters: Iterable[DeadLetter]) -> None: ...


class CountingDeadLetters(ABC):
    """Base of the sinks: counts by reason, `total`, `put_many`; a subclass stores in `_store`."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def put_many(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self.put(letter)

    def put(self, letter: DeadLetter) -> None:
        self.counts[letter.reason] += 1
        self._store(letter)

    @abstractmethod
    def _store(self, letter: DeadLetter) -> None:
        """Keep one letter."""


class MemoryDeadLetters(CountingDeadLetters):
    """Keeps the letters in a list (for the API and tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.letters: list[DeadLetter] = []

    def _store(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


class JsonlDeadLetters(CountingDeadLetters):
    """Appends one JSON object per letter to a file; flushed on `close()` and on each `flush()`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dead.jsonl"
    >>> with JsonlDeadLetters(path) as sink:
    ...     sink.put(DeadLetter("csv", 3, "missing_id", "user is empty"))
    >>> read_dead_letters(path)[0].reason
    'missing_id'
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file = None

    def _store(self, letter: DeadLetter) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(orjson.dumps(asdict(letter)) + b"\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlDeadLetters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_dead_letters(path: str | Path) -> list[DeadLetter]:
    """Read back a JSONL dead-letter file."""
    with Path(path).open("rb") as f:
        return [DeadLetter(**orjson.loads(line)) for line in f if line.strip()]
