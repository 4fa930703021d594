from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import need_real_data

from freshrec.events.datasets.movielens import GENRES, open_movielens
from freshrec.events.deadletter import MemoryDeadLetters


def _folder(tmp_path: Path, ratings: list[str]) -> Path:
    flags = ["0"] * len(GENRES)
    drama = flags.copy()
    drama[GENRES.index("Drama")] = "1"
    both = drama.copy()
    both[GENRES.index("Comedy")] = "1"
    items = [f"1|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(drama)}",
             f"2|Caf\xe9 (1996)|01-Jan-1996||http://y|{'|'.join(both)}"]
    (tmp_path / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (tmp_path / "u.data").write_text("\n".join(ratings) + "\n")
    return tmp_path


def test_join_sort_and_label(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["1\t2\t5\t300", "2\t1\t3\t100", "1\t1\t4\t200"])
    replay = open_movielens(folder, MemoryDeadLetters())
    rows = list(next(iter(replay)).events())
    assert [r.ts for r in rows] == [100.0, 200.0, 300.0]
    assert [r.label for r in rows] == [0.0, 1.0, 1.0]
    assert [e.event_id for e in rows] == ["movielens-100k:2", "movielens-100k:3", "movielens-100k:1"]
    last = rows[2]
    assert (last.user_id, last.item_id, last.kind) == (1, 2, "rating")
    assert last.fields["genres"] == ["Comedy", "Drama"]
    assert (last.fields["age"], last.fields["sex"], last.fields["occupation"], last.fields["zip3"]) == (
        "24", "M", "technician", "857")
    assert last.fields["rating"] == 5.0
    assert "rating" not in {f.name for f in replay.fields}  # the target is never a feature


def test_bad_rating_lines_are_dead_lettered_and_the_rest_replayed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["1\t1\t4\t100", "1\t1\t4", "\t1\t4\t101", "1\tx\t4\t102",
                                "1\t1\t4\tyesterday", "1\t1\t9\t103", "", "2\t2\t2\t104"])
    sink = MemoryDeadLetters()
    replay = open_movielens(folder, sink)
    chunk = next(iter(replay))
    assert chunk.positions.tolist() == [1, 8]
    assert [(d.position, d.reason) for d in sorted(sink.letters, key=lambda d: d.position)] == [
        (2, "column_count"), (3, "missing_id"), (4, "not_a_number"), (5, "bad_time"), (6, "bad_label"),
        (7, "column_count")]


def test_missing_files_named(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("")
    with pytest.raises(FileNotFoundError, match="u.item, u.user not found"):
        open_movielens(tmp_path, MemoryDeadLetters())


@pytest.mark.integration
def test_real_movielens_100k() -> None:
    sink = MemoryDeadLetters()
    replay = open_movielens(need_real_data("movielens-100k"), sink)
    table = pa.concat_tables([c.table for c in replay])
    assert table.num_rows == 100_000 and sink.total == 0
    ts = table.column("ts").to_numpy()
    assert np.all(np.diff(ts) >= 0) and ts[0] == 874724710 and ts[-1] == 893286638
    assert int(table.column("label").to_numpy().sum()) == 34_174 + 21_201
    assert table.column("genres").null_count == 0
    assert len(set(table.column("user_id").to_pylist())) == 943
    assert len(set(table.column("item_id").to_pylist())) == 1_682
