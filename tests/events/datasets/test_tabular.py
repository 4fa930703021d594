"""Generic CSV/Parquet interaction-log reader: mapping, labels, bad rows, CSV == Parquet."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import need_real_data
from hypothesis import given
from hypothesis import strategies as st

from freshrec.events.datasets.delimited import line_numbers
from freshrec.events.datasets.tabular import ColumnMapping, open_table_log, parse_label
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import Field, FieldKind

MOVIELENS = """userId,movieId,rating,timestamp,genres,budget
1,31,2.5,2009-12-14T02:52:24Z,Drama,1.5
1,1029,3.0,2009-12-14 02:53:00,Animation|Children|Drama,
2,10,4.0,2009-12-14T03:00:00+01:00,Action|Adventure,3
3,17,5.0,2009-12-13T00:00:00Z,,2.25
"""
ML_MAPPING = ColumnMapping(user="userId", item="movieId", time="timestamp", label="rating>=4",
                           categorical=("movieId",), dense=("budget",), multi=("genres",))


def _events(replay) -> list:
    return [e for chunk in replay for e in chunk.events()]


def test_movielens_style_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(MOVIELENS)
    dead = MemoryDeadLetters()
    replay = open_table_log(path, ML_MAPPING, dead)
    events = _events(replay)
    assert dead.total == 0
    # replayed in event time; 03:00+01:00 is 02:00 UTC, naive times are UTC
    assert [e.event_id for e in events] == [f"ratings.csv:{line}" for line in (5, 4, 2, 3)]
    assert [e.ts for e in events] == [1260662400.0, 1260756000.0, 1260759144.0, 1260759180.0]
    assert [e.label for e in events] == [1.0, 1.0, 0.0, 0.0]
    assert [e.user_id for e in events] == ["3", "2", "1", "1"]  # CSV ids stay text
    assert events[3].fields["genres"] == ["Animation", "Children", "Drama"]
    assert events[0].fields["genres"] is None and events[3].fields["budget"] is None
    assert replay.fields == (Field("user_id", FieldKind.CATEGORICAL, "user"),
                             Field("item_id", FieldKind.CATEGORICAL, "item"),
                             Field("movieId", FieldKind.CATEGORICAL),
                             Field("genres", FieldKind.MULTI_CATEGORICAL),
                             Field("budget", FieldKind.DENSE))


def test_parquet_gives_the_same_events(tmp_path: Path) -> None:
    csv_path = tmp_path / "ratings.csv"
    csv_path.write_text(MOVIELENS)
    table = pa.csv.read_csv(csv_path, convert_options=pa.csv.ConvertOptions(
        column_types={"userId": pa.string(), "movieId": pa.string(), "timestamp": pa.string(),
                      "genres": pa.string()}))
    pq.write_table(table, tmp_path / "ratings.parquet")
    from_csv = _events(open_table_log(csv_path, ML_MAPPING, MemoryDeadLetters()))
    from_parquet = _events(open_table_log(tmp_path / "ratings.parquet", ML_MAPPING, MemoryDeadLetters(),
                                          fmt="parquet", name="ratings.csv"))
    key = lambda e: (e.ts, e.user_id, e.item_id, e.label, e.fields)
    assert [key(e) for e in from_parquet] == [key(e) for e in from_csv]
    assert [e.event_id for e in from_parquet] == ["ratings.csv:4", "ratings.csv:3", "ratings.csv:1",
                                                  "ratings.csv:2"]  # parquet: row index + 1


def test_parquet_typed_columns_and_bad_rows(tmp_path: Path) -> None:
    table = pa.table({
        "user": pa.array([1, 2, None, 4, 5, 2**62], pa.int64()),
        "item": pa.array(["a", "b", "c", "", "e", "f"]),
        "t": pa.array([10.0, 20.0, 30.0, 40.0, float("nan"), 5.0]),
        "clicked": pa.array([True, False, True, True, True, False]),
        "tags": pa.array([["x"], [], ["y", "z"], None, ["x"], ["q"]], pa.list_(pa.string())),
    })
    pq.write_table(table, tmp_path / "log.parquet")
    dead = MemoryDeadLetters()
    mapping = ColumnMapping("user", "item", "t", label="clicked", multi=("tags",))
    replay = open_table_log(tmp_path / "log.parquet", mapping, dead, fmt="parquet")
    assert sorted((l.position, l.reason) for l in dead.letters) == [
        (3, "missing_id"), (4, "missing_id"), (5, "bad_time")]
    assert '"item": "c"' in next(l.raw for l in dead.letters if l.position == 3)
    chunk = next(iter(replay))
    assert chunk.table.column("user_id").type == pa.int64()
    assert chunk.table.column("user_id").to_pylist() == [2**62, 1, 2]  # exact, never via float
    assert chunk.table.column("label").to_pylist() == [0.0, 1.0, 0.0]
    assert chunk.table.column("tags").to_pylist() == [["q"], ["x"], []]


def test_bad_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("u,i,t,click,price\n"
                    "u1,i1,100,1,9.5\n"        # 2 good
                    "u1,i1,100,1\n"            # 3 column count
                    "u2,i2,101,0,cheap\n"      # 4 not a number
                    " ,i3,102,0,1\n"           # 5 missing id
                    "u4,i4,yesterday,0,1\n"    # 6 bad time
                    "u5,i5,103,2,1\n"          # 7 bad label
                    "\n"                       # 8 empty line
                    "u6,,104,1,1\n"            # 9 missing item
                    "u7,i7,2020-01-01,0,\n")   # 10 good, empty dense -> null
    dead = MemoryDeadLetters()
    mapping = ColumnMapping("u", "i", "t", label="click", dense=("price",))
    replay = open_table_log(path, mapping, dead)
    assert sorted((l.position, l.reason) for l in dead.letters) == [
        (3, "column_count"), (4, "not_a_number"), (5, "missing_id"), (6, "bad_time"),
        (7, "bad_label"), (8, "column_count"), (9, "missing_id")]
    assert {l.position: l.raw for l in dead.letters}[6] == "u4,i4,yesterday,0,1"
    chunk = next(iter(replay))
    assert chunk.positions.tolist() == [2, 10]
    assert chunk.table.column("price").to_pylist() == [9.5, None]


@pytest.mark.parametrize("expr,expected", [
    ("score>=30", [0.0, 1.0, 1.0]), ("score>30", [0.0, 0.0, 1.0]), ("score<=30", [1.0, 1.0, 0.0]),
    ("score<30", [1.0, 0.0, 0.0]), ("score==30", [0.0, 1.0, 0.0]), ("score != 30", [1.0, 0.0, 1.0]),
    ("score>=3e1", [0.0, 1.0, 1.0])])
def test_threshold_labels(tmp_path: Path, expr: str, expected: list[float]) -> None:
    path = tmp_path / "w.csv"
    path.write_text("u,i,t,score\na,x,1,10\nb,y,2,30\nc,z,3,45.5\n")
    replay = open_table_log(path, ColumnMapping("u", "i", "t", label=expr), MemoryDeadLetters())
    assert next(iter(replay)).table.column("label").to_pylist() == expected


def test_threshold_source_missing_is_a_bad_label(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("u,i,t,score\na,x,1,\nb,y,2,31\n")
    dead = MemoryDeadLetters()
    replay = open_table_log(path, ColumnMapping("u", "i", "t", label="score>30"), dead)
    assert [(l.position, l.reason) for l in dead.letters] == [(2, "bad_label")] and len(replay) == 1


def test_no_label_means_positive(tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text("u,i,t\na,x,1\n")
    replay = open_table_log(path, ColumnMapping("u", "i", "t"), MemoryDeadLetters())
    assert next(iter(replay)).table.column("label").to_pylist() == [1.0]


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_delimiter_detection_gzip_and_headerless(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "log.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(sep.join(["u", "i", "t", "r"]) + "\n" + sep.join(["a", "x", "5", "4"]) + "\n")
    mapping = ColumnMapping("u", "i", "t", label="r>3")
    chunk = next(iter(open_table_log(path, mapping, MemoryDeadLetters())))
    assert chunk.table.column("item_id").to_pylist() == ["x"] and chunk.positions.tolist() == [2]
    headerless = tmp_path / "u.data"
    rows = [sep.join(["a", "x", "5", "4"]), "broken", sep.join(["b", "y", "6", "1"])]
    headerless.write_text("\n".join(rows) + "\n")
    dead = MemoryDeadLetters()
    chunk = next(iter(open_table_log(headerless, mapping, dead, column_names=("u", "i", "t", "r"))))
    assert chunk.positions.tolist() == [1, 3] and [(l.position, l.reason) for l in dead.letters] == [
        (2, "column_count")]


def test_bad_mappings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\na,x,1\n")
    with pytest.raises(ValueError, match=r"'genre'.*available columns: 'u', 'i', 't'"):
        open_table_log(path, ColumnMapping("u", "i", "t", categorical=("genre",)), MemoryDeadLetters())
    with pytest.raises(ValueError, match="bad label expression 'rating=>4'"):
        ColumnMapping("u", "i", "t", label="rating=>4")
    with pytest.raises(ValueError, match="bad label expression"):
        parse_label("rating >= four")
    with pytest.raises(ValueError, match="clashes with a standard column"):
        ColumnMapping("u", "i", "t", dense=("label",))
    with pytest.raises(ValueError, match="fmt must be"):
        open_table_log(path, ColumnMapping("u", "i", "t"), MemoryDeadLetters(), fmt="json")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        open_table_log(tmp_path / "absent.csv", ColumnMapping("u", "i", "t"), MemoryDeadLetters())
    pq.write_table(pa.table({"u": [1.0], "i": ["x"], "t": [1]}), tmp_path / "f.parquet")
    with pytest.raises(ValueError, match="user column 'u' has type double"):
        open_table_log(tmp_path / "f.parquet", ColumnMapping("u", "i", "t"), MemoryDeadLetters(),
                       fmt="parquet")
    with pytest.raises(ValueError, match="'zz'.*available columns"):
        open_table_log(tmp_path / "f.parquet", ColumnMapping("u", "zz", "t"), MemoryDeadLetters(),
                       fmt="parquet")


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 3))
def test_line_numbers_match_a_plain_count(skipped_flags: list[bool], first: int) -> None:
    lines = np.arange(first, first + len(skipped_flags))
    flags = np.array(skipped_flags, dtype=bool)
    expected = lines[~flags] if len(flags) else lines
    got = line_numbers(int((~flags).sum()), lines[flags] if len(flags) else lines[:0], first)
    assert got.tolist() == expected.tolist()


@pytest.mark.integration
def test_real_movielens_100k_u_data() -> None:
    path = need_real_data("movielens-100k/u.data")
    dead = MemoryDeadLetters()
    replay = open_table_log(path, ColumnMapping("user", "item", "ts", label="rating>=4"), dead,
                            column_names=("user", "item", "rating", "ts"))
    chunks = list(replay)
    assert dead.total == 0 and len(replay) == 100_000
    ts = np.concatenate([c.table.column("ts").to_numpy() for c in chunks])
    assert np.all(np.diff(ts) >= 0)  # u.data is not in time order; the replay sorts it
    labels = np.concatenate([c.table.column("label").to_numpy() for c in chunks])
    assert labels.sum() == 55_375  # ratings 4 and 5 in ml-100k


def test_parquet_times_past_pythons_datetime_are_bad_times_with_their_row_as_text(tmp_path: Path) -> None:
    table = pa.table({"u": ["a", "b", "c"], "i": ["x", "y", "z"],
                      "t": pa.array([-86_399_999_913_601, 1_000, 2**62 // 1000], pa.timestamp("s"))})
    pq.write_table(table, tmp_path / "log.parquet")
    dead = MemoryDeadLetters()   # found by fuzzing: the dead letter's text raised OverflowError
    replay = open_table_log(tmp_path / "log.parquet", ColumnMapping("u", "i", "t"), dead, fmt="parquet")
    assert [(l.position, l.reason) for l in dead.letters] == [(1, "bad_time"), (3, "bad_time")]
    assert '"u": "a"' in dead.letters[0].raw and next(iter(replay)).positions.tolist() == [2]


@pytest.mark.parametrize("data", [b"", b"PAR1", b"not parquet at all"])
def test_a_file_that_is_not_parquet_is_a_value_error_naming_it(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "log.parquet").write_bytes(data)
    with pytest.raises(ValueError, match="log.parquet: not a readable Parquet file"):
        open_table_log(tmp_path / "log.parquet", ColumnMapping("u", "i", "t"), MemoryDeadLetters(), fmt="parquet")
