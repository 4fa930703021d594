"""Criteo Display Advertising Challenge TSV, streamed in file order (file order is time order).

Each line: `label, I1..I13, C1..C26` (tab-separated; the test file has no label). Integers
may be negative or empty; categoricals are 8-hex-digit strings or empty. The file carries no
timestamp: `ts` is the line number ("sequence time"), so pacing by event time does not apply.

Bad lines (wrong column count, a non-integer I value, a label outside {0,1}; `bad_encoding`:
text that is not UTF-8) go to the dead-letter sink with their line number; the stream goes on.

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
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from freshrec.events.datasets.tsv_kernel import (
    BAD_LABEL,
    COLUMN_COUNT,
    REASONS,
    ParsedTsv,
    is_ascii,
    parse_tsv,
    utf8_lines,
)
from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import LABEL, TS, EventChunk, Field, FieldKind
from freshrec.events.source import Position

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
        size = self.batch_size * 256
        with self.path.open("rb") as f:
            _skip_lines(f, self._next_line - 1)
            while block := f.read(size):
                cut = block.rfind(b"\n") + 1
                if cut == 0 and len(block) == size:  # a line longer than the block
                    f.seek(-len(block), 1)
                    size *= 2
                    continue
                if 0 < cut < len(block):
                    f.seek(cut - len(block), 1)  # the partial last line starts the next block
                chunk = self._chunk(np.frombuffer(block, np.uint8, count=cut or len(block)), labelled)
                if len(chunk):
                    yield chunk

    def _chunk(self, buf: np.ndarray, labelled: bool) -> EventChunk:
        parsed = parse_tsv(buf, len(INTEGER_COLUMNS), len(CATEGORICAL_COLUMNS), labelled)
        first_line = self._next_line
        self._next_line += parsed.n_lines
        if len(parsed.bad_line):
            self.dead_letters.put_many(self._letters(buf, parsed, first_line, labelled))
        lines = parsed.lines + first_line
        columns = {TS: pa.array(lines.astype(np.float64))}
        if labelled:
            columns[LABEL] = pa.array(parsed.labels)
        for j, name in enumerate(INTEGER_COLUMNS):
            columns[name] = pa.array(parsed.ints[:, j], mask=~parsed.int_valid[:, j])
        for j, name in enumerate(CATEGORICAL_COLUMNS):
            columns[name] = _text_column(parsed.text_offsets[j], parsed.text_data[j])
        table = pa.table(columns)
        if not is_ascii(buf):   # the kernel copies text as bytes: a line that is not UTF-8 is dead-lettered
            utf8 = utf8_lines(buf, parsed.lines)
            if not utf8.all():
                ends = np.flatnonzero(buf == 10)
                self.dead_letters.put_many(DeadLetter(self.name, first_line + int(line), "bad_encoding",
                                                      "not UTF-8 text", _line_text(buf, ends, int(line)))
                                           for line in parsed.lines[~utf8])
                table, lines = table.filter(pa.array(utf8)), lines[utf8]
        return EventChunk(table, lines, self.name, self.kind)

    def _letters(self, buf: np.ndarray, parsed: ParsedTsv, first_line: int,
                 labelled: bool) -> list[DeadLetter]:
        names = ([LABEL] if labelled else []) + list(INTEGER_COLUMNS) + list(CATEGORICAL_COLUMNS)
        letters = []
        for k in range(len(parsed.bad_line)):
            text = bytes(buf[parsed.bad_start[k]: parsed.bad_end[k]]).decode("utf-8", "replace")
            code, field = int(parsed.bad_code[k]), int(parsed.bad_field[k])
            if code == COLUMN_COUNT:
                detail = f"{text.count(chr(9)) + 1} columns, expected {len(names)}"
            else:
                value = text.split("\t")[field]
                detail = f"{names[field]}={value!r} is not " + ("0 or 1" if code == BAD_LABEL else "an integer")
            letters.append(DeadLetter(self.name, first_line + int(parsed.bad_line[k]), REASONS[code], detail,
                                      text))
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

def _skip_lines(f: BinaryIO, lines: int) -> None:
    """Move `f` to the start of line `lines + 1` (or to the end of the file)."""
    while lines > 0:
        start = f.tell()
        block = f.read(1 << 24)
        if not block:
            return
        newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
        if len(newlines) >= lines:
            f.seek(start + int(newlines[lines - 1]) + 1)
            return
        lines -= len(newlines)


def _line_text(buf: np.ndarray, ends: np.ndarray, line: int) -> str:
    """The text of line `line` (0-based) of `buf` whose newlines are at `ends`, bytes that are not
    UTF-8 replaced."""
    start = int(ends[line - 1]) + 1 if line else 0
    end = int(ends[line]) if line < len(ends) else len(buf)
    return bytes(buf[start:end]).decode("utf-8", "replace").removesuffix("\r")


def _text_column(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """An Arrow string array over ready buffers (zero copy); empty values are null."""
    present = np.diff(offsets) > 0
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data),
                                       validity, null_count=int(len(present) - present.sum()))
