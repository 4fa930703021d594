"""Criteo Display Advertising Challenge TSV, streamed in file order (file order is time order).

Each line: `label, I1..I13, C1..C26` (tab-separated; the test file has no label). Integers
may be negative or empty; categoricals are 8-hex-digit strings or empty. The file carries no
timestamp: `ts` is the line number ("sequence time"), so pacing by event time does not apply.

Bad lines (wrong column count, a non-integer I value, a label outside {0,1}) go to the
dead-letter sink with their line number; the stream goes on.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> path = pathlib.Path(tempfile.mkdtemp()) / "day_0.txt"
>>> good = "\\t".join(["1"] + ["5"] * 13 + ["68fd1e64"] * 26)
>>> _ = path.write_text(good + "\\n" + "2\\tbroken\\n" + good + "\\n")
>>> letters = MemoryDeadLetters()
>>> replay = CriteoReplay(path, letters)
>>> [len(chunk) for chunk in replay], [(l.position, l.reason) for l in letters.letters]
([2], [(2, 'column_count')])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from pathlib import Path

import numpy as np
import pyarrow as pa

from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import LABEL, TS, EventChunk, Field, FieldKind
from freshrec.events.source import Position
from freshrec.events.datasets.tsv_kernel import BAD_LABEL, COLUMN_COUNT, REASONS, gather_texts, parse_tsv

INTEGER_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
FIELDS = tuple(Field(c, FieldKind.DENSE) for c in INTEGER_COLUMNS) + tuple(
    Field(c, FieldKind.CATEGORICAL) for c in CATEGORICAL_COLUMNS)


def _is_labelled(path: Path) -> bool:
    with path.open("rb") as f:
        first = f.readline().rstrip(b"\r\n")
    return first.count(b"\t") + 1 != len(INTEGER_COLUMNS) + len(CATEGORICAL_COLUMNS)


class CriteoReplay:
    """Streams a Criteo DAC file as `EventChunk`s of about `batch_size` rows.

    Lines are split and checked by a numba kernel (`tsv_kernel`), one pass over the bytes.
    Positions are 1-based line numbers; `position()` is the next line to read.
    """

    name = "criteo"
    fields = FIELDS
    has_event_time = False
    kind = "impression"

    def __init__(self, path: str | Path, dead_letters: DeadLetterSink, batch_size: int = 65_536) -> None:
        self.path = Path(path)
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self._next_line = 1
        self._committed = 1

    def __iter__(self) -> Iterator[EventChunk]:
        if not self.path.is_file():
            raise FileNotFoundError(f"criteo: no file at {self.path}")
        labelled = _is_labelled(self.path)
        with self.path.open("rb") as f:
            rest = _skip_lines(f, self._next_line - 1)
            while True:
                block = f.read(self.batch_size * 256)
                data = rest + block
                cut = data.rfind(b"\n") + 1 if block else len(data)
                rest = data[cut:]
                if cut:
                    chunk = self._chunk(np.frombuffer(data, np.uint8, count=cut), labelled)
                    if len(chunk):
                        yield chunk
                if not block:
                    return

    def _chunk(self, buf: np.ndarray, labelled: bool) -> EventChunk:
        parsed = parse_tsv(buf, len(INTEGER_COLUMNS), len(CATEGORICAL_COLUMNS), labelled)
        lines = np.arange(self._next_line, self._next_line + len(parsed.labels), dtype=np.int64)
        self._next_line += len(lines)
        bad = parsed.bad_code != 0
        if bad.any():
            self.dead_letters.put_many(self._letters(buf, parsed, lines, labelled))
        keep = ~bad
        columns = {TS: pa.array(lines[keep].astype(np.float64))}
        if labelled:
            columns[LABEL] = pa.array(parsed.labels[keep])
        for j, name in enumerate(INTEGER_COLUMNS):
            columns[name] = pa.array(parsed.ints[keep, j], mask=~parsed.int_valid[keep, j])
        offsets, base, data = gather_texts(buf, parsed.cat_start, parsed.cat_end, keep)
        present = ((parsed.cat_end - parsed.cat_start)[keep] > 0).T
        for j, name in enumerate(CATEGORICAL_COLUMNS):
            columns[name] = _text_column(offsets[j], data[base[j]: base[j + 1]], present[j])
        return EventChunk(pa.table(columns), lines[keep], self.name, self.kind)

    def _letters(self, buf: np.ndarray, parsed, lines: np.ndarray, labelled: bool) -> list[DeadLetter]:
        names = ([LABEL] if labelled else []) + list(INTEGER_COLUMNS) + list(CATEGORICAL_COLUMNS)
        letters = []
        for r in np.flatnonzero(parsed.bad_code):
            text = bytes(buf[parsed.line_start[r]: parsed.line_end[r]]).decode("utf-8", "replace")
            code = int(parsed.bad_code[r])
            if code == COLUMN_COUNT:
                detail = f"{text.count(chr(9)) + 1} columns, expected {len(names)}"
            else:
                field = names[parsed.bad_field[r]]
                value = text.split("\t")[parsed.bad_field[r]]
                detail = f"{field}={value!r} is not " + ("0 or 1" if code == BAD_LABEL else "an integer")
            letters.append(DeadLetter(self.name, int(lines[r]), REASONS[code], detail, text))
        return letters

    def position(self) -> Position:
        return {"line": self._next_line}

    def commit(self, position: Position) -> None:
        self._committed = position["line"]

    def committed(self) -> Position:
        return {"line": self._committed}

    def seek(self, position: Position) -> None:
        if position["line"] < 1:
            raise ValueError(f"line numbers start at 1, got {position['line']}")
        self._next_line = position["line"]

def _skip_lines(f: BinaryIO, lines: int) -> bytes:
    """Advance `f` past `lines` lines; returns the bytes read beyond the last skipped newline."""
    while lines > 0:
        block = f.read(1 << 24)
        if not block:
            return b""
        newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
        if len(newlines) >= lines:
            return block[newlines[lines - 1] + 1:]
        lines -= len(newlines)
    return b""


def _text_column(offsets: np.ndarray, data: np.ndarray, present: np.ndarray) -> pa.Array:
    """An Arrow string array over ready buffers; values with `present` False are null."""
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data),
                                       validity, null_count=int(len(present) - present.sum()))
