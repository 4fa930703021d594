"""Fuzzed file readers (Criteo TSV kernel, Avazu, MovieLens, Open Bandit, CSV and Parquet logs).

Hypothesis mutates valid records (a field dropped or added, junk text, empty values, huge numbers,
NaN/inf, bytes that are not UTF-8, stray quotes, tabs and carriage returns, very long lines, a
truncated last line) and feeds random bytes. A reader never raises but its documented usage error
(`MappingError`: the columns it needs are not in the header), and accounts for every record: each
line (each Parquet row) is delivered or dead-lettered, once, never both, with a reason and a detail.
Each test tries 100 examples (FRESHREC_FUZZ_EXAMPLES=1000 fuzzes longer).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshrec.events.datasets.avazu import AVAZU_COLUMNS, open_avazu
from freshrec.events.datasets.criteo import CriteoReplay
from freshrec.events.datasets.delimited import MappingError
from freshrec.events.datasets.movielens import GENRES, open_movielens
from freshrec.events.datasets.open_bandit import open_open_bandit
from freshrec.events.datasets.tabular import ColumnMapping, open_table_log
from freshrec.events.deadletter import MemoryDeadLetters

FUZZ = settings(max_examples=int(os.environ.get("FRESHREC_FUZZ_EXAMPLES", 100)), deadline=None,
                suppress_health_check=list(HealthCheck))
JUNK = st.one_of(
    st.sampled_from([b"", b" ", b"x", b"NaN", b"nan", b"inf", b"-inf", b"1e400", b"-1e400", b"9" * 40, b"-0",
                     b"-9223372036854775809", b"18446744073709551616", b"0.5", b"+", b"-", b'"', b'""', b'"x',
                     b'x"', b'"x"y', b"\t", b"\r", b",", b"|", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80",
                     "\u00e9\u20ac".encode(), b"\xef\xbb\xbf", b"2019-13-45T99:00:00Z", b"14102199"]),
    st.binary(max_size=6), st.text(max_size=6).map(str.encode))


@st.composite
def _lines(draw, good: list[list[bytes]], sep: bytes) -> bytes:
    """Lines made from `good` records, some mutated, a line of random bytes, CRLF or LF, and maybe
    cut short anywhere (a truncated last line)."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        fields = list(draw(st.sampled_from(good)))
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(fields) - 1))
            change = draw(st.sampled_from(["junk", "junk", "drop", "add", "long"]))
            if change == "junk":
                fields[at] = draw(JUNK)
            elif change == "drop":
                del fields[at]
            elif change == "add":
                fields.insert(at, draw(JUNK))
            else:
                fields[at] = (fields[at][:8] or b"7") * 3000
            if not fields:
                break
        lines.append(sep.join(fields))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.binary(max_size=40)))
    data = b"".join(line + draw(st.sampled_from([b"\n", b"\r\n"])) for line in lines)
    return data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


def _line_count(data: bytes) -> int:
    """Physical lines: split at LF; a last line without one counts."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _text_line_count(data: bytes) -> int:
    """Physical lines of a UTF-8 CSV file, whose byte-order mark (at its start) is no text."""
    return _line_count(data.removeprefix(b"\xef\xbb\xbf"))


def _delivered(replay) -> list[int]:
    """The positions of the rows `replay` delivers, whose tables must be valid Arrow data (UTF-8 text)."""
    positions = []
    for chunk in replay:
        chunk.table.validate(full=True)
        positions += chunk.positions.tolist()
    return positions


def _assert_accounted(delivered: list[int], dead: MemoryDeadLetters, lines: range, source: str | None = None) -> None:
    """Every record in `lines` delivered or dead-lettered exactly once; each letter has a reason."""
    letters = [letter for letter in dead.letters if source is None or letter.source == source]
    for letter in letters:
        assert re.fullmatch(r"[a-z_]+", letter.reason) and letter.detail, letter
    assert sorted(delivered + [letter.position for letter in letters]) == list(lines)


# --------------------------------------------------------------------------- Criteo (TSV kernel)

CRITEO = [[b"1"] + [b"5"] * 13 + [b"68fd1e64"] * 26,
          [b"0", b"-3", b""] + [b"12"] * 11 + [b"", b"abc"] + [b"05db9164"] * 24]


def _criteo(folder: Path, data: bytes, batch_size: int) -> None:
    path = folder / "day_0.txt"
    path.write_bytes(data)
    dead = MemoryDeadLetters()
    delivered = _delivered(CriteoReplay(path, dead, batch_size=batch_size))
    _assert_accounted(delivered, dead, range(1, _line_count(data) + 1))


@FUZZ
@given(_lines(CRITEO, b"\t"), st.sampled_from([1, 4, 65_536]))
def test_criteo_near_valid_lines_are_each_delivered_or_dead_lettered(tmp_path_factory, data: bytes,
                                                                      batch_size: int) -> None:
    _criteo(tmp_path_factory.mktemp("criteo"), data, batch_size)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from([1, 65_536]))
def test_criteo_random_bytes_are_each_line_delivered_or_dead_lettered(tmp_path_factory, data: bytes,
                                                                      batch_size: int) -> None:
    _criteo(tmp_path_factory.mktemp("criteo"), data, batch_size)


# --------------------------------------------------------------------------- Avazu

AVAZU = [(b"1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,"
          b"07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79").split(b","),
         (b"10000169349117863715,1,14102813,1002,1,85f751fd,c4e18dd6,50e219e0,9c13b419,2347f47a,"
          b"f95efa07,d8a8bfa4,8a014cbb,fdf4d5ce,1,0,15704,320,50,1722,0,35,100084,79").split(b",")]
AVAZU_HEADER = ",".join(AVAZU_COLUMNS).encode() + b"\n"


def _avazu(folder: Path, data: bytes) -> None:
    path = folder / "train.csv"
    path.write_bytes(AVAZU_HEADER + data)
    dead = MemoryDeadLetters()
    _assert_accounted(_delivered(open_avazu(path, dead)), dead, range(2, _line_count(data) + 2))


@FUZZ
@given(_lines(AVAZU, b","))
def test_avazu_near_valid_rows_are_each_delivered_or_dead_lettered(tmp_path_factory, data: bytes) -> None:
    _avazu(tmp_path_factory.mktemp("avazu"), data)


@FUZZ
@given(st.binary(max_size=3000))
def test_avazu_random_bytes_after_the_header_are_each_line_delivered_or_dead_lettered(tmp_path_factory,
                                                                                      data: bytes) -> None:
    _avazu(tmp_path_factory.mktemp("avazu"), data)


@FUZZ
@given(st.binary(max_size=3000))
def test_avazu_random_bytes_without_its_header_is_a_mapping_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("avazu") / "train.csv"
    path.write_bytes(data)
    with pytest.raises(MappingError, match=r"no column '|line 1, the header, is not a row of column names"):
        open_avazu(path, MemoryDeadLetters())


# --------------------------------------------------------------------------- MovieLens-100k

RATINGS = [[b"1", b"2", b"5", b"881250949"], [b"2", b"1", b"3", b"891717742"], [b"1", b"1", b"4", b"875072484"]]
U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join("1" if g == "Drama" else "0" for g in GENRES)
          + "\n2|Caf\xe9 (1996)|01-Jan-1996||http://y|" + "|".join(["0"] * len(GENRES)) + "\n").encode("latin-1")
U_USER = b"1|24|M|technician|85711\n2|53|F|other|94043\n"


def _movielens(folder: Path, ratings: bytes, items: bytes = U_ITEM, users: bytes = U_USER) -> MemoryDeadLetters:
    for name, data in (("u.data", ratings), ("u.item", items), ("u.user", users)):
        (folder / name).write_bytes(data)
    dead = MemoryDeadLetters()
    _assert_accounted(_delivered(open_movielens(folder, dead)), dead, range(1, _text_line_count(ratings) + 1),
                     "movielens-100k")
    return dead


@FUZZ
@given(_lines(RATINGS, b"\t"))
def test_movielens_near_valid_ratings_are_each_delivered_or_dead_lettered(tmp_path_factory, data: bytes) -> None:
    _movielens(tmp_path_factory.mktemp("movielens"), data)


@FUZZ
@given(st.binary(max_size=2000), st.binary(max_size=1000), st.binary(max_size=1000))
def test_movielens_random_bytes_in_every_file_lose_no_rating_and_no_side_line(tmp_path_factory, ratings: bytes,
                                                                             items: bytes, users: bytes) -> None:
    dead = _movielens(tmp_path_factory.mktemp("movielens"), ratings, items, users)
    for name, lines in (("u.item", _line_count(items)), ("u.user", _text_line_count(users))):   # u.item: latin-1
        lettered = [letter.position for letter in dead.letters if letter.source == f"movielens-100k/{name}"]
        assert len(set(lettered)) == len(lettered) and set(lettered) <= set(range(1, lines + 1))


# --------------------------------------------------------------------------- Open Bandit

OBD_HEADER = (b",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
              b"user_feature_2,user_feature_3,user-item_affinity_0\n")
OBD = [b"0,2019-11-24 00:00:34.762830+00:00,0,3,1,0.0125,u0,u1,u2,u3,0.0".split(b","),
       b"1,2019-11-24 00:01:00+00:00,7,1,0,0.5,a,b,c,d,1.5".split(b",")]
CONTEXT_HEADER = b",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n"
OBD_CONTEXT = CONTEXT_HEADER + b"0,0,-0.5,a,b,c\n"


def _open_bandit(root: Path, log: bytes, context: bytes = OBD_CONTEXT) -> None:
    folder = root / "men"
    folder.mkdir()
    (folder / "item_context.csv").write_bytes(context)
    (folder / "men.csv").write_bytes(OBD_HEADER + log)
    dead = MemoryDeadLetters()
    _assert_accounted(_delivered(open_open_bandit(folder, dead)), dead, range(2, _line_count(log) + 2))


@FUZZ
@given(_lines(OBD, b","))
def test_open_bandit_near_valid_rows_are_each_delivered_or_dead_lettered(tmp_path_factory, data: bytes) -> None:
    _open_bandit(tmp_path_factory.mktemp("obd"), data)


@FUZZ
@given(st.binary(max_size=3000))
def test_open_bandit_random_bytes_after_the_header_are_each_line_delivered_or_dead_lettered(tmp_path_factory,
                                                                                            data: bytes) -> None:
    _open_bandit(tmp_path_factory.mktemp("obd"), data)


@FUZZ
@given(st.one_of(st.binary(max_size=500), _lines([b"0,0,-0.5,a,b,c".split(b",")], b",").map(CONTEXT_HEADER.__add__)))
def test_open_bandit_bad_item_context_is_a_clear_value_error(tmp_path_factory, context: bytes) -> None:
    try:
        _open_bandit(tmp_path_factory.mktemp("obd"), b",".join(OBD[0]) + b"\n", context)
    except ValueError as error:   # metadata, not part of the stream: documented to raise
        assert re.search(r"malformed item context|no column", str(error)), error


# --------------------------------------------------------------------------- CSV and Parquet logs

LOG_HEADER = b"u,i,t,click,price,genre,tags,rating\n"
LOG = [b"u1,i1,1260759144,1,9.5,drama,a|b,4.5".split(b","), b"7,42,2009-12-14T02:52:24Z,0,,,c,1".split(b",")]
MAPPINGS = [ColumnMapping("u", "i", "t", label="click", categorical=("genre",), dense=("price",), multi=("tags",)),
            ColumnMapping("u", "i", "t", label="rating>=4", target="rating", delimiter=",")]


def _csv_log(folder: Path, data: bytes, mapping: ColumnMapping) -> None:
    path = folder / "log.csv"
    path.write_bytes(LOG_HEADER + data)
    dead = MemoryDeadLetters()
    _assert_accounted(_delivered(open_table_log(path, mapping, dead)), dead, range(2, _line_count(data) + 2))


@FUZZ
@given(_lines(LOG, b","), st.sampled_from(MAPPINGS))
def test_csv_log_near_valid_rows_are_each_delivered_or_dead_lettered(tmp_path_factory, data: bytes,
                                                                     mapping: ColumnMapping) -> None:
    _csv_log(tmp_path_factory.mktemp("csv"), data, mapping)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(MAPPINGS))
def test_csv_log_random_bytes_after_the_header_are_each_line_delivered_or_dead_lettered(
        tmp_path_factory, data: bytes, mapping: ColumnMapping) -> None:
    _csv_log(tmp_path_factory.mktemp("csv"), data, mapping)


@FUZZ
@given(st.binary(max_size=3000))
def test_csv_log_random_bytes_without_its_header_is_a_mapping_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "log.csv"
    path.write_bytes(data)
    with pytest.raises(MappingError, match=r"no column '|line 1, the header, is not a row of column names"):
        open_table_log(path, MAPPINGS[0], MemoryDeadLetters())


_NUMBERS = st.one_of(st.none(), st.floats(), st.sampled_from([0.0, 1.0, -1.0, 1e300, 2.0**63]))
_TEXTS = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["", " ", "1", "NaN", "inf", "1e400", "2020-01-01"]))
_INTEGERS = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.integers(-10**10, 10**10))
_SECONDS = st.one_of(st.none(), st.integers(-(2**63 // 1000), 2**63 // 1000 - 1))   # Parquet writes them as ms
_COLUMNS = {  # the Parquet types a column may have, and its values
    "u": [(pa.string(), _TEXTS), (pa.int64(), _INTEGERS)],
    "i": [(pa.string(), _TEXTS)],
    "t": [(pa.string(), _TEXTS), (pa.float64(), _NUMBERS), (pa.int64(), _INTEGERS),
          (pa.timestamp("s"), _SECONDS), (pa.timestamp("ns"), _INTEGERS)],
    "click": [(pa.string(), _TEXTS), (pa.float64(), _NUMBERS), (pa.bool_(), st.none() | st.booleans())],
    "price": [(pa.string(), _TEXTS), (pa.float64(), _NUMBERS), (pa.int64(), _INTEGERS)],
    "genre": [(pa.string(), _TEXTS)],
    "tags": [(pa.string(), _TEXTS), (pa.list_(pa.string()), st.none() | st.lists(_TEXTS, max_size=2))],
    "rating": [(pa.string(), _TEXTS), (pa.float64(), _NUMBERS), (pa.int64(), _INTEGERS)],
}


@st.composite
def _parquet_tables(draw) -> pa.Table:
    rows = draw(st.integers(0, 8))
    columns = {}
    for name, choices in _COLUMNS.items():
        kind, values = draw(st.sampled_from(choices))
        columns[name] = pa.array(draw(st.lists(values, min_size=rows, max_size=rows)), kind)
    return pa.table(columns)


@FUZZ
@given(_parquet_tables(), st.sampled_from(MAPPINGS))
def test_parquet_near_valid_rows_are_each_delivered_or_dead_lettered(tmp_path_factory, table: pa.Table,
                                                                     mapping: ColumnMapping) -> None:
    path = tmp_path_factory.mktemp("parquet") / "log.parquet"
    pq.write_table(table, path)
    dead = MemoryDeadLetters()
    delivered = _delivered(open_table_log(path, mapping, dead, fmt="parquet"))
    _assert_accounted(delivered, dead, range(1, table.num_rows + 1))


@FUZZ
@given(st.binary(max_size=2000), st.integers(0, 2000))
def test_parquet_random_or_cut_bytes_are_a_clear_value_error(tmp_path_factory, data: bytes, cut: int) -> None:
    path = tmp_path_factory.mktemp("parquet") / "log.parquet"
    pq.write_table(pa.table({"u": ["a"], "i": ["b"], "t": [1.0], "click": [1.0]}), path)
    whole = path.read_bytes()
    path.write_bytes(data or whole[:cut % len(whole)])
    with pytest.raises(ValueError, match="log.parquet: not a readable Parquet file"):
        open_table_log(path, MAPPINGS[0], MemoryDeadLetters(), fmt="parquet")

