"""Open Bandit Dataset reader: the six real logs, and bad rows on a small campaign folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import need_real_data

from freshrec.events.datasets.open_bandit import open_open_bandit
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import FieldKind

CLICKS = {"random/all": 38, "random/men": 46, "random/women": 46,
          "bts/all": 42, "bts/men": 69, "bts/women": 46}
ITEMS = {"all": 80, "men": 34, "women": 46}
WEEK_START, WEEK_END = 1574553600.0, 1574553600.0 + 7 * 86400  # 2019-11-24 .. 2019-12-01 UTC

HEADER = (",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
          "user_feature_2,user_feature_3,user-item_affinity_0,user-item_affinity_1")
CONTEXT = (",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n"
           "0,0,-0.5,a0,b0,c0\n1,1,0.25,a1,b1,c1\n")




def _row(index: int = 0, ts: str = "2019-11-24 00:00:34.762830+00:00", item: str = "1",
         position: str = "2", click: str = "0", propensity: str = "0.0125", user0: str = "u0") -> str:
    return f"{index},{ts},{item},{position},{click},{propensity},{user0},u1,u2,u3,0.0,0.5"


def _campaign(tmp_path: Path, lines: list[str]) -> Path:
    folder = tmp_path / "random" / "men"
    folder.mkdir(parents=True)
    (folder / "item_context.csv").write_text(CONTEXT)
    (folder / "men.csv").write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("log", sorted(CLICKS))
def test_real_logs(log: str) -> None:
    dead = MemoryDeadLetters()
    replay = open_open_bandit(need_real_data(f"open-bandit-dataset-small/{log}"), dead)
    chunk = next(iter(replay))
    assert dead.total == 0 and len(replay) == len(chunk) == 10_000
    assert chunk.table.column("label").to_numpy().sum() == CLICKS[log]
    ts = chunk.table.column("ts").to_numpy()
    assert np.all(np.diff(ts) >= 0) and WEEK_START <= ts[0] < WEEK_START + 86400
    assert WEEK_END - 86400 <= ts[-1] < WEEK_END
    assert chunk.positions.tolist() == list(range(2, 10_002))
    campaign = log.split("/")[1]
    affinity = [f for f in replay.fields if f.name.startswith("user-item_affinity_")]
    assert len(affinity) == ITEMS[campaign] and all(f.kind is FieldKind.DENSE for f in affinity)
    assert set(chunk.table.column("position").to_pylist()) == {1, 2, 3}
    assert chunk.table.column("item_feature_0").null_count == 0  # every item is in the context


@pytest.mark.integration
def test_real_log_file_path_and_first_row() -> None:
    replay = open_open_bandit(need_real_data("open-bandit-dataset-small/random/all/all.csv.gz"), MemoryDeadLetters())
    first = next(next(iter(replay)).events())
    assert first.ts == pytest.approx(1574553634.76283) and first.item_id == 14
    assert first.fields["position"] == 3 and first.fields["propensity_score"] == 0.0125
    assert first.user_id == ("81ce123cbb5bd8ce818f60fb3586bba5-03a5648a76832f83c859d46bc06cb64a-"
                             "c2e4f76cdbabecd33b8c762aeef386b3-f97571b9c14a786aab269f0b427d2a85")


def test_bad_rows_go_to_dead_letters_with_line_and_reason(tmp_path: Path) -> None:
    lines = [
        _row(0),                               # line 2: good
        _row(1) + ",0.1",                      # line 3: 13 columns
        _row(2, propensity="0.0x"),            # line 4: not a number
        _row(3, user0=""),                     # line 5: missing id
        _row(4, ts="2019-11-32 00:00:00"),     # line 6: bad time
        _row(5, click="-1"),                   # line 7: bad label
        "",                                    # line 8: empty line
        _row(6, item=""),                      # line 9: missing item id
        _row(7, position="left"),              # line 10: not a number
        _row(8, ts="2019-11-24 00:00:01+00:00", item="0", click="1"),  # line 11: good, earlier
        _row(9, item="7"),                     # line 12: good, item not in the context
    ]
    dead = MemoryDeadLetters()
    replay = open_open_bandit(_campaign(tmp_path, lines), dead)
    got = sorted((letter.position, letter.reason) for letter in dead.letters)
    assert got == [(3, "column_count"), (4, "not_a_number"), (5, "missing_id"), (6, "bad_time"),
                   (7, "bad_label"), (8, "column_count"), (9, "missing_id"), (10, "not_a_number")]
    assert {letter.source for letter in dead.letters} == {"open_bandit"}
    chunk = next(iter(replay))
    assert chunk.positions.tolist() == [11, 2, 12]  # replayed in time order
    table = chunk.table
    assert table.column("item_id").to_pylist() == [0, 1, 7]
    assert table.column("item_feature_0").to_pylist() == [-0.5, 0.25, None]
    assert table.column("item_feature_3").to_pylist() == ["c0", "c1", None]
    assert table.column("label").to_pylist() == [1.0, 0.0, 0.0]
    assert table.column("user_id")[0].as_py() == "u0-u1-u2-u3"


def test_paths_and_errors(tmp_path: Path) -> None:
    folder = _campaign(tmp_path, [_row(0)])
    assert len(open_open_bandit(folder / "men.csv", MemoryDeadLetters())) == 1
    with pytest.raises(FileNotFoundError, match="missing"):
        open_open_bandit(tmp_path / "missing", MemoryDeadLetters())
    (folder / "item_context.csv").unlink()
    with pytest.raises(FileNotFoundError, match="item_context.csv"):
        open_open_bandit(folder, MemoryDeadLetters())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no Open Bandit log"):
        open_open_bandit(empty, MemoryDeadLetters())


def test_bad_item_context_is_an_error(tmp_path: Path) -> None:
    folder = _campaign(tmp_path, [_row(0)])
    (folder / "item_context.csv").write_text(CONTEXT + "2,two,0.1,a,b,c\n")
    with pytest.raises(ValueError, match="malformed item context"):
        open_open_bandit(folder, MemoryDeadLetters())


def test_item_context_whose_header_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    folder = _campaign(tmp_path, [_row(0)])
    (folder / "item_context.csv").write_bytes(b"\x80\r")   # found by fuzzing: a UnicodeDecodeError
    with pytest.raises(ValueError, match="malformed item context"):
        open_open_bandit(folder, MemoryDeadLetters())
