"""Read a whole delimited text file as string columns; rows with a wrong column count go to
the dead-letter sink with their line number, and every kept row keeps its line number.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> _ = path.write_text("user,item\\nu1,i1\\nu2\\nu3,i3\\n")
>>> letters = MemoryDeadLetters()
>>> table, lines = read_delimited(path, ",", letters, "demo")
>>> table.column("user").to_pylist(), lines.tolist(), [(l.position, l.reason) for l in letters.letters]
(['u1', 'u3'], [2, 4], [(3, 'column_count')])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from freshrec.events.deadletter import DeadLetter, DeadLetterSink


def line_numbers(rows: int, first_line: int, skipped_lines: Sequence[int]) -> np.ndarray:
    """Line numbers of `rows` parsed rows starting at `first_line`, given the lines skipped.

    >>> line_numbers(3, 1, [2]).tolist()
    [1, 3, 4]
    """
    index = np.arange(rows, dtype=np.int64)
    skipped = np.sort(np.asarray(skipped_lines, dtype=np.int64))
    before = np.searchsorted(skipped - first_line - np.arange(len(skipped)), index, side="right")
    return index + first_line + before


def read_delimited(path: str | Path, delimiter: str, dead_letters: DeadLetterSink, source: str,
                   column_names: Sequence[str] | None = None,
                   encoding: str = "utf8") -> tuple[pa.Table, np.ndarray]:
    """All columns as strings plus the 1-based line number of each row.

    With `column_names=None` the first line is the header. Gzip and other compressions are
    detected from the file name. A missing file raises `FileNotFoundError` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no file at {path}")
    letters: list[DeadLetter] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        letters.append(DeadLetter(source, row.number, "column_count",
                                  f"{row.actual_columns} columns, expected {row.expected_columns}",
                                  row.text))
        return "skip"

    names = list(column_names) if column_names is not None else _header(path, delimiter, encoding)
    table = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=0 if column_names else 1,
                                      use_threads=False, encoding=encoding),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False,
                                        invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                            strings_can_be_null=True, quoted_strings_can_be_null=False))
    dead_letters.put_many(letters)
    first_line = 1 if column_names is not None else 2
    return table, line_numbers(table.num_rows, first_line, [d.position for d in letters])


def _header(path: Path, delimiter: str, encoding: str) -> list[str]:
    with pa.input_stream(str(path), compression="detect") as stream:
        head = stream.read(1 << 16)
    first = head.split(b"\n", 1)[0].decode(encoding).rstrip("\r")
    return [name.strip().strip('"') for name in first.split(delimiter)]
