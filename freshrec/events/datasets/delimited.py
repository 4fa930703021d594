"""The CSV plumbing every dataset reader shares.

A record is one physical line (lines end at LF; a CR just before it is dropped). Files are read
with all columns as text; a line that is not one well-formed row goes to the dead-letter sink with
its line number and never stops the read: `column_count` for a wrong number of fields, for a quote
left open at the end of the line (a quoted value may hold the delimiter, never a line break) and
for a carriage return inside the line; `bad_encoding` for bytes that are not UTF-8 (in a file read
as UTF-8). Every kept row keeps its line number. The rows are then parsed and validated
column-wise by `RowChecks`. A header line that is not one well-formed row is a `MappingError`; a
UTF-8 byte-order mark at the start of a file is not text.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> _ = path.write_bytes(b'user,item\\nu1,i1\\nu2\\nu3,i3\\nu4,"i4\\nu5,\\xff\\nu6,i6\\n')
>>> letters = MemoryDeadLetters()
>>> rows = read_text_csv(path, "demo", letters)
>>> rows.table.column("user").to_pylist(), rows.lines.tolist()
(['u1', 'u3', 'u6'], [2, 4, 7])
>>> [(l.position, l.reason) for l in letters.letters]
[(3, 'column_count'), (5, 'column_count'), (6, 'bad_encoding')]
"""

from __future__ import annotations

import csv as pycsv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from freshrec._words import load8
from freshrec.events.datasets.tsv_kernel import is_ascii, valid_utf8
from freshrec.events.deadletter import DeadLetter, DeadLetterSink
from freshrec.events.event import Field
from freshrec.events.source import TableReplay
from freshrec.events.validate import RowChecks, blank_mask


@dataclass(frozen=True)
class TextRows:
    """A CSV file read as text: `table` (string columns), `lines` (1-based physical line per row)."""

    table: pa.Table
    lines: np.ndarray
    delimiter: str

    def raw(self, row: int) -> str:
        """The row's text rebuilt by joining its values (an all-empty row gives '')."""
        values = ["" if c[row].as_py() is None else str(c[row].as_py()) for c in self.table.columns]
        return self.delimiter.join(values) if any(values) else ""


def existing_file(path: Path, what: str = "data file") -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


_LF, _CR, _QUOTE, _BOM = 10, 13, 34, b"\xef\xbb\xbf"
_ONES, _HIGHS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
ONE_ROW, OPEN_QUOTE, CARRIAGE_RETURN, NOT_UTF8 = 0, 1, 2, 3
_PROBLEMS = {OPEN_QUOTE: ("column_count", "a quote is left open at the end of the line"),
             CARRIAGE_RETURN: ("column_count", "a carriage return inside the line"),
             NOT_UTF8: ("bad_encoding", "not UTF-8 text")}


@numba.njit(inline="always")
def _holds(word, byte):
    """Nonzero when one of the 8 bytes of `word` is `byte` (SWAR)."""
    x = word ^ (_ONES * np.uint64(byte))
    return (x - _ONES) & ~x & _HIGHS


@numba.njit(nogil=True, cache=True)
def _scan_lines(buf, delimiter, utf8):
    """The physical lines of `buf` that Arrow's CSV parser does not read as exactly one row, as rows
    of (line number from 0, why: a code, start, end without the LF), and the longest line's length.
    Arrow ends a row at a CR, and a quote opened at the start of a field runs on over line breaks;
    a line with neither a quote nor a CR is skipped through 8 bytes at a time."""
    bad, n_bad = np.empty((16, 4), np.int64), 0
    line, pos, size, longest = 0, 0, len(buf), 0
    while pos < size:
        stop, special = pos, False
        while True:
            while stop + 8 <= size:
                word = load8(buf, stop)
                if _holds(word, _LF) | _holds(word, _CR) | _holds(word, _QUOTE):
                    break
                stop += 8
            if stop >= size or buf[stop] == _LF:
                break
            special |= (buf[stop] == _QUOTE) | (buf[stop] == _CR)
            stop += 1
        end = stop - 1 if stop > pos and buf[stop - 1] == _CR else stop
        code, quoted, field_start, i = ONE_ROW, False, True, pos if special else end
        while i < end:   # Arrow's states, for a line with quotes or CRs
            c = buf[i]
            if quoted:
                if c == _QUOTE:
                    if i + 1 < end and buf[i + 1] == _QUOTE:
                        i += 1
                    else:
                        quoted = False
            elif field_start and c == _QUOTE:
                quoted, field_start = True, False
            elif c == delimiter:
                field_start = True
            elif c == _CR:
                code = CARRIAGE_RETURN
                break
            else:
                field_start = False
            i += 1
        if code == ONE_ROW and quoted:
            code = OPEN_QUOTE
        if code == ONE_ROW and utf8 and not valid_utf8(buf, pos, end):
            code = NOT_UTF8
        if code != ONE_ROW:
            if n_bad == len(bad):
                bigger = np.empty((2 * len(bad), 4), np.int64)
                bigger[:n_bad] = bad
                bad = bigger
            bad[n_bad, 0], bad[n_bad, 1], bad[n_bad, 2], bad[n_bad, 3] = line, code, pos, stop
            n_bad += 1
        longest = max(longest, stop - pos)
        line, pos = line + 1, stop + 1
    return bad[:n_bad], longest


def sniff_delimiter(header: str) -> str:
    """',' unless the header line holds more tabs or semicolons than commas.

    >>> sniff_delimiter("a\\tb\\tc"), sniff_delimiter("a;b"), sniff_delimiter("a,b;c")
    ('\\t', ';', ',')
    """
    counts = {d: header.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return data if end < 0 else data[:end]


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") == "utf8"


def _header(data: bytes, code: int, path: Path, delimiter: str, encoding: str) -> list[str]:
    """The column names in the header line, the first line (`code`: how `_scan_lines` found it)."""
    text = _first_line(data).decode(encoding, errors="replace").removesuffix("\r")
    if code != ONE_ROW:
        raise MappingError(f"{path}: line 1, the header, is not a row of column names: {_PROBLEMS[code][1]}")
    try:
        return next(pycsv.reader([text], delimiter=delimiter), None) or [""]
    except pycsv.Error as error:
        raise MappingError(f"{path}: line 1, the header, is not a row of column names: {error}") from None


def read_text_csv(path: Path, source: str, dead_letters: DeadLetterSink, delimiter: str | None = ",",
                  column_names: tuple[str, ...] | None = None, encoding: str = "utf8") -> TextRows:
    """Read a CSV (plain or compressed, by extension) with every column as text.

    Each line that is not one well-formed row becomes a `DeadLetter` with its physical line number
    (see the module) and never stops the read. With `column_names` the file has no header; without,
    an empty file has no columns. `encoding` is UTF-8 or another that keeps ASCII as it is (latin-1).
    """
    path = existing_file(path)
    with pa.input_stream(str(path), compression="detect") as stream:
        data = stream.read()
    utf8 = _is_utf8(encoding)
    if utf8 and data.startswith(_BOM):
        data = data[len(_BOM):]
    if not data and not column_names:
        return TextRows(pa.table({}), np.zeros(0, np.int64), delimiter or ",")
    if delimiter is None:
        delimiter = sniff_delimiter(_first_line(data).decode(encoding, errors="replace"))
    buf = np.frombuffer(data, np.uint8)
    bad, longest = _scan_lines(buf, ord(delimiter), utf8 and not is_ascii(buf))
    first = 0 if column_names else 1   # lines before the records: the header
    if column_names:
        names = list(column_names)
    else:
        header_code = int(bad[0, 1]) if len(bad) and bad[0, 0] == 0 else ONE_ROW
        names, bad = _header(data, header_code, path, delimiter, encoding), bad[bad[:, 0] > 0]
    letters = []
    for line, code, start, stop in bad.tolist():
        reason, detail = _PROBLEMS[code]
        raw = data[start:stop].decode(encoding, errors="replace").removesuffix("\r")
        letters.append(DeadLetter(source, line + 1, reason, detail, raw))
    invalid = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number - 1, f"{row.actual_columns} columns, expected {row.expected_columns}", row.text))
        return "skip"

    body = _without(data, len(_first_line(data)) + 1 if first else 0, bad)
    if utf8 and bytes(body[:len(_BOM)]) == _BOM:
        body = _BOM + bytes(body)  # Arrow drops a byte-order mark at the start: this one, not the line's
    if body:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(use_threads=False, encoding=encoding, column_names=names,
                                           block_size=min(max(1 << 20, 2 * longest + 16), 2**31 - 1)),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    else:
        table = pa.table({n: pa.array([], pa.string()) for n in names})
    unread = bad[:, 0] + 1   # the lines Arrow did not see
    lines = _lines_of(np.array([row for row, _, _ in invalid], np.int64), unread, first + 1)
    letters += [DeadLetter(source, int(line), "column_count", detail, text)
                for line, (_, detail, text) in zip(lines, invalid)]
    dead_letters.put_many(sorted(letters, key=lambda letter: letter.position))
    skipped = np.array([letter.position for letter in letters], dtype=np.int64)
    return TextRows(table, line_numbers(table.num_rows, skipped, first + 1), delimiter)


def _without(data: bytes, start: int, bad: np.ndarray) -> bytes | memoryview:
    """The lines of `data` from `start` on, less the `bad` ones (with their line ends)."""
    view = memoryview(data)
    if not len(bad):
        return view[start:]
    pieces, at = [], start
    for line_start, line_stop in bad[:, 2:].tolist():
        pieces.append(view[at:line_start])
        at = line_stop + 1
    pieces.append(view[at:])
    return b"".join(pieces)


def line_numbers(n: int, skipped: np.ndarray, first_data_line: int) -> np.ndarray:
    """Physical line of each of `n` parsed rows, given the sorted lines that were skipped.

    >>> line_numbers(4, np.array([3, 4, 7]), 2).tolist()
    [2, 5, 6, 8]
    """
    return _lines_of(np.arange(n, dtype=np.int64), skipped, first_data_line)


def _lines_of(rows: np.ndarray, skipped: np.ndarray, first_data_line: int) -> np.ndarray:
    """Physical line of the parsed rows numbered `rows` (from 0), given the lines that were skipped."""
    gaps = np.sort(skipped) - first_data_line - np.arange(len(skipped))
    return rows + first_data_line + np.searchsorted(gaps, rows, side="right")


def blank_to_null(values: pa.Array) -> pa.Array:
    """Empty strings become nulls (a missing categorical value)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values
    return pc.if_else(pa.array(blank_mask(values)), pa.scalar(None, values.type), values)


def reject_empty_lines(checks: RowChecks, table: pa.Table) -> None:
    """Rows whose every field is empty (an empty line) -> `column_count`."""
    empty = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        empty &= pc.fill_null(pc.equal(column, ""), True).to_numpy(zero_copy_only=False)
    checks.reject(empty, "column_count", lambda r: f"empty line, expected {table.num_columns} columns")


class MappingError(ValueError):
    """A column mapping that does not fit the data (a column it names is missing): a usage error."""


def require_columns(available: list[str], needed: list[str] | tuple[str, ...], path: Path) -> None:
    """`MappingError` naming the missing columns and listing the available ones, or naming a needed
    column the header holds twice."""
    missing = [c for c in needed if c not in available]
    if missing:
        raise MappingError(f"{path}: no column {', '.join(map(repr, missing))}; "
                         f"available columns: {', '.join(map(repr, available))}")
    twice = [c for c in dict.fromkeys(needed) if available.count(c) > 1]
    if twice:
        raise MappingError(f"{path}: column {', '.join(map(repr, twice))} appears more than once in the header")


def valid_replay(columns: dict[str, pa.Array], positions: np.ndarray, checks: RowChecks,
                 raw: Callable[[int], str | None], dead_letters: DeadLetterSink, name: str,
                 fields: tuple[Field, ...], batch_size: int) -> TableReplay:
    """Send the bad rows to `dead_letters` and replay the good ones."""
    dead_letters.put_many(checks.letters(name, positions, raw))
    keep = ~checks.bad
    table = pa.table(columns).filter(pa.array(keep))
    return TableReplay(table, positions[keep], name=name, fields=fields, batch_size=batch_size)
