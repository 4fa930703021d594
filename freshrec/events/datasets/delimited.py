"""The CSV plumbing every dataset reader shares.

Files are read with all columns as text; rows with a wrong column count go to the
dead-letter sink with their physical line number and never stop the read; every kept row
keeps its line number. The rows are then parsed and validated column-wise by `RowChecks`.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> _ = path.write_text("user,item\\nu1,i1\\nu2\\nu3,i3\\n")
>>> letters = MemoryDeadLetters()
>>> rows = read_text_csv(path, "demo", letters)
>>> rows.table.column("user").to_pylist(), rows.lines.tolist(), [(l.position, l.reason) for l in letters.letters]
(['u1', 'u3'], [2, 4], [(3, 'column_count')])
"""

from __future__ import annotations

import csv as pycsv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

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


def _header_line(path: Path) -> str:
    """The first line of a (possibly compressed) text file."""
    data = b""
    with pa.input_stream(str(path), compression="detect") as stream:
        while b"\n" not in data:
            block = stream.read(1 << 16)
            if not block:
                break
            data += block
    return data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")


def sniff_delimiter(header: str) -> str:
    """',' unless the header line holds more tabs or semicolons than commas.

    >>> sniff_delimiter("a\\tb\\tc"), sniff_delimiter("a;b"), sniff_delimiter("a,b;c")
    ('\\t', ';', ',')
    """
    counts = {d: header.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def read_text_csv(path: Path, source: str, dead_letters: DeadLetterSink, delimiter: str | None = ",",
                  column_names: tuple[str, ...] | None = None, encoding: str = "utf8") -> TextRows:
    """Read a CSV (plain or compressed, by extension) with every column as text.

    Rows with a wrong column count become `DeadLetter(reason="column_count")` with their
    physical line number and never stop the read. With `column_names` the file has no header.
    Line numbers assume one record per physical line (no newlines inside quoted values).
    """
    path = existing_file(path)
    header = _header_line(path)
    delimiter = sniff_delimiter(header) if delimiter is None else delimiter
    names = list(column_names) if column_names else next(pycsv.reader([header], delimiter=delimiter), [])
    skipped: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        skipped.append(row.number)
        detail = f"{row.actual_columns} columns, expected {row.expected_columns}"
        dead_letters.put(DeadLetter(source, row.number, "column_count", detail, row.text))
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, encoding=encoding,
                                       column_names=list(column_names) if column_names else None),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                         ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    first = 1 if column_names else 2
    return TextRows(table, line_numbers(table.num_rows, np.array(skipped, dtype=np.int64), first), delimiter)


def line_numbers(n: int, skipped: np.ndarray, first_data_line: int) -> np.ndarray:
    """Physical line of each of `n` parsed rows, given the sorted lines that were skipped.

    >>> line_numbers(4, np.array([3, 4, 7]), 2).tolist()
    [2, 5, 6, 8]
    """
    rows = np.arange(n, dtype=np.int64)
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
    """`MappingError` naming the missing columns and listing the available ones."""
    missing = [c for c in needed if c not in available]
    if missing:
        raise MappingError(f"{path}: no column {', '.join(map(repr, missing))}; "
                         f"available columns: {', '.join(map(repr, available))}")


def valid_replay(columns: dict[str, pa.Array], positions: np.ndarray, checks: RowChecks,
                 raw: Callable[[int], str | None], dead_letters: DeadLetterSink, name: str,
                 fields: tuple[Field, ...], batch_size: int) -> TableReplay:
    """Send the bad rows to `dead_letters` and replay the good ones."""
    dead_letters.put_many(checks.letters(name, positions, raw))
    keep = ~checks.bad
    table = pa.table(columns).filter(pa.array(keep))
    return TableReplay(table, positions[keep], name=name, fields=fields, batch_size=batch_size)
