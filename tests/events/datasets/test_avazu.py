"""Avazu reader: the real head of train.csv, and every kind of bad row on small files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import need_real_data

from freshrec.events.datasets.avazu import AVAZU_COLUMNS, FIELDS, open_avazu
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import FieldKind

GOOD = ("1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,"
        "07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79").split(",")




def _row(**changes: str) -> str:
    values = list(GOOD)
    for name, value in changes.items():
        values[AVAZU_COLUMNS.index(name)] = value
    return ",".join(values)


def _write(tmp_path: Path, lines: list[str], name: str = "train.csv") -> Path:
    path = tmp_path / name
    text = ",".join(AVAZU_COLUMNS) + "\n" + "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.integration
def test_real_head_counts_clicks_and_order() -> None:
    dead = MemoryDeadLetters()
    replay = open_avazu(need_real_data("avazu-head/avazu_train_head9999.csv"), dead, batch_size=4096)
    chunks = list(replay)
    assert dead.total == 0
    assert len(replay) == 9_999 and [len(c) for c in chunks] == [4096, 4096, 1807]
    labels = np.concatenate([c.table.column("label").to_numpy() for c in chunks])
    assert labels.mean() == pytest.approx(0.1706, abs=5e-5)
    ts = np.concatenate([c.table.column("ts").to_numpy() for c in chunks])
    hour = 1413849600.0   # 2014-10-21 00:00 UTC, every row: spread evenly over the hour in file order
    np.testing.assert_allclose(ts, hour + 3600.0 * np.arange(9_999) / 9_999)
    positions = np.concatenate([c.positions for c in chunks])
    assert positions[0] == 2 and positions[-1] == 10_000
    first = chunks[0].table
    assert first.column("id")[0].as_py() == "1000009418151094273"
    assert first.column("id")[1].as_py() == "10000169349117863715"  # > int64 max, kept exact
    assert first.column("user_id")[0].as_py() == "ddd2926e-44956a24"  # anonymous device
    assert first.column("item_id")[0].as_py() == 15706


def test_bad_rows_go_to_dead_letters_with_line_and_reason(tmp_path: Path) -> None:
    lines = [
        _row(),                                # line 2: good
        ",".join(GOOD[:10]),                   # line 3: 10 columns
        _row(C15="3x0"),                       # line 4: not a number
        _row(id=""),                           # line 5: missing id
        _row(hour="14x02100"),                 # line 6: bad time
        _row(click="2"),                       # line 7: bad label
        "",                                    # line 8: empty line
        _row(device_id="", device_ip="1"),     # line 9: no user
        _row(C14=""),                          # line 10: no item
        _row(hour="14102113", device_id="d1"),  # line 11: good
    ]
    dead = MemoryDeadLetters()
    replay = open_avazu(_write(tmp_path, lines), dead)
    got = sorted((letter.position, letter.reason) for letter in dead.letters)
    assert got == [(3, "column_count"), (4, "not_a_number"), (5, "missing_id"), (6, "bad_time"),
                   (7, "bad_label"), (8, "column_count"), (9, "missing_id"), (10, "missing_id")]
    by_line = {letter.position: letter for letter in dead.letters}
    assert by_line[3].raw == ",".join(GOOD[:10])
    assert by_line[6].raw == _row(hour="14x02100") and "hour" in by_line[6].detail
    assert by_line[8].raw == ""
    chunk = next(iter(replay))
    assert chunk.positions.tolist() == [2, 11]
    assert chunk.table.column("user_id").to_pylist() == ["ddd2926e-44956a24", "d1"]
    assert chunk.table.column("ts").to_pylist() == [1413849600.0, 1413849600.0 + 13 * 3600]


def test_gzip_and_fields(tmp_path: Path) -> None:
    dead = MemoryDeadLetters()
    replay = open_avazu(_write(tmp_path, [_row(), _row(click="1")], "train.csv.gz"), dead)
    chunk = next(iter(replay))
    assert dead.total == 0 and chunk.table.column("label").to_pylist() == [0.0, 1.0]
    assert chunk.table.column("label").type.bit_width == 32
    assert replay.fields == FIELDS and all(f.kind is FieldKind.CATEGORICAL for f in FIELDS)
    assert {f.name for f in FIELDS} == set(AVAZU_COLUMNS) - {"id", "click", "hour", "C14"} | {"user_id", "item_id"}
    assert chunk.table.column_names[:4] == ["ts", "user_id", "item_id", "label"]


def test_missing_file_and_wrong_header(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        open_avazu(tmp_path / "nope.csv", MemoryDeadLetters())
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="available columns: 'a', 'b'"):
        open_avazu(other, MemoryDeadLetters())
