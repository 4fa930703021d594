"""The shared CSV plumbing on the inputs fuzzing found (tests/events/test_fuzz_readers.py): every
physical line is one record, delivered or dead-lettered with its line number; a bad header or an
empty file is a `MappingError` in the reader, never an Arrow error."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.events.datasets.avazu import open_avazu
from freshrec.events.datasets.delimited import MappingError, read_text_csv, require_columns
from freshrec.events.deadletter import MemoryDeadLetters


def _read(tmp_path: Path, data: bytes, **options) -> tuple[list[dict], list[int], list[tuple[int, str]]]:
    path = tmp_path / "log.csv"
    path.write_bytes(data)
    dead = MemoryDeadLetters()
    rows = read_text_csv(path, "t", dead, **options)
    return rows.table.to_pylist(), rows.lines.tolist(), [(letter.position, letter.reason) for letter in dead.letters]


def test_an_unclosed_quote_is_dead_lettered_and_swallows_no_later_line(tmp_path: Path) -> None:
    rows, lines, letters = _read(tmp_path, b'a,b\nx,"y\n' + b"q,r\n" * 300_000)   # was: 1 MB of lines lost
    assert len(rows) == 300_000 and lines[:2] == [3, 4] and lines[-1] == 300_002
    assert letters == [(2, "column_count")]


def test_a_carriage_return_inside_a_line_is_dead_lettered_not_split_in_two_rows(tmp_path: Path) -> None:
    rows, lines, letters = _read(tmp_path, b"a,b\nx,y\rz,w\nq\r,r\nc,d\r\n")
    assert rows == [{"a": "c", "b": "d"}] and lines == [4] and letters == [(2, "column_count"), (3, "column_count")]


def test_a_quoted_value_may_hold_the_delimiter_and_a_carriage_return(tmp_path: Path) -> None:
    rows, lines, letters = _read(tmp_path, b'a,b\n"x,1","y\r""z"""\n')
    assert rows == [{"a": "x,1", "b": 'y\r"z"'}] and lines == [2] and letters == []


def test_bytes_that_are_not_utf8_are_a_bad_encoding_with_any_column_count(tmp_path: Path) -> None:
    rows, lines, letters = _read(tmp_path, b"a,b\nx,\xff\xfe\n\xb8\nq,r\n")   # was: ArrowInvalid, UnicodeDecodeError
    assert rows == [{"a": "q", "b": "r"}] and lines == [4] and letters == [(2, "bad_encoding"), (3, "bad_encoding")]


def test_a_latin1_file_takes_any_byte(tmp_path: Path) -> None:
    rows, _, letters = _read(tmp_path, b"1|Caf\xe9\n", delimiter="|", column_names=("id", "title"), encoding="latin-1")
    assert rows == [{"id": "1", "title": "Caf\u00e9"}] and letters == []


def test_a_line_longer_than_arrows_block_is_read(tmp_path: Path) -> None:
    rows, lines, letters = _read(tmp_path, b"a,b\nx,y\nq," + b"z" * 3_000_000 + b"\nq,r\n")   # was: "straddling"
    assert [len(row["b"]) for row in rows] == [1, 3_000_000, 1] and lines == [2, 3, 4] and letters == []


def test_empty_files_and_a_header_alone_give_no_rows(tmp_path: Path) -> None:
    assert _read(tmp_path, b"", delimiter="\t", column_names=("u", "i")) == ([], [], [])   # was: "Empty CSV file"
    assert _read(tmp_path, b"a,b") == ([], [], [])      # was: "cannot infer number of columns"
    assert _read(tmp_path, b"\xef\xbb\xbf") == ([], [], [])
    bom_on_line_2 = _read(tmp_path, b"\xef\xbb\xbfa,b\n\xef\xbb\xbfx,y\n")[0]
    assert bom_on_line_2 == [{"a": "\ufeffx", "b": "y"}]   # a byte-order mark after the start is text


def test_an_empty_file_or_a_bad_header_is_a_mapping_error_in_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    for data, says in [(b"", "no column 'id'"), (b"\r\x00\n", "carriage return"), (b"\x80\n", "not UTF-8"),
                       (b'id,"click\n', "quote")]:
        path.write_bytes(data)
        with pytest.raises(MappingError, match=says):
            open_avazu(path, MemoryDeadLetters())


def test_a_needed_column_twice_in_the_header_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="column 'u' appears more than once"):   # was: KeyError
        require_columns(["u", "i", "u"], ["u", "i"], Path("log.csv"))
