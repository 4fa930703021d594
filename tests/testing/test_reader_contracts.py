"""Every reader in `FORMATS` passes `freshrec.testing.check_reader` on a small file of its format
with malformed rows in it (written here, so no real data is needed); and each check can fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freshrec.events.datasets import FORMATS, ColumnMapping, open_source
from freshrec.events.datasets.avazu import AVAZU_COLUMNS
from freshrec.events.datasets.movielens import GENRES
from freshrec.events.deadletter import DeadLetter
from freshrec.events.simulator import SimulatorConfig, write_criteo_tsv
from freshrec.events.source import TableReplay
from freshrec.testing import check_dead_letters, check_ids, check_positions, check_reader, check_seek


@dataclass(frozen=True)
class Sample:
    """A file (or folder) of one format: `rows` good rows and `bad` malformed ones."""

    path: Path | None
    rows: int
    bad: int
    mapping: ColumnMapping | None = None
    simulator: SimulatorConfig | None = None


def _criteo(folder: Path) -> Sample:
    path = folder / "day_0.txt"
    write_criteo_tsv(path, rows=10, seed=1)
    good = path.read_text().splitlines()[0].split("\t")
    bad = ["\t".join(["2", *good[1:]]), "\t".join(good[:20]), "\t".join([good[0], "12a", *good[2:]])]
    with path.open("a") as f:
        f.write("\n".join(bad) + "\n")
    return Sample(path, 10, 3)


def _avazu(folder: Path) -> Sample:
    good = ("1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,"
            "07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79").split(",")
    rows = [",".join([str(n), str(n % 2), f"141021{n:02d}", *good[3:]]) for n in range(10)]
    rows[3:3] = [",".join(good[:10]), ",".join([good[0], "2", *good[2:]]), ",".join([*good[:2], "14x02100", *good[3:]])]
    path = folder / "train.csv"
    path.write_text(",".join(AVAZU_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return Sample(path, 10, 3)


def _movielens(folder: Path) -> Sample:
    flags = "|".join("1" if genre == "Drama" else "0" for genre in GENRES)
    (folder / "u.item").write_text("".join(f"{i}|Film {i} (1995)|01-Jan-1995||http://x|{flags}\n" for i in (1, 2, 3)))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    ratings = [f"{1 + n % 2}\t{1 + n % 3}\t{1 + n % 5}\t{100 + n}" for n in range(10)]
    ratings[5:5] = ["1\t1\t4", "1\tx\t4\t90", "1\t1\t9\t91"]
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    return Sample(folder, 10, 3)


def _open_bandit(folder: Path) -> Sample:
    campaign = folder / "random" / "men"
    campaign.mkdir(parents=True)
    (campaign / "item_context.csv").write_text(",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n"
                                               "0,0,-0.5,a0,b0,c0\n1,1,0.25,a1,b1,c1\n")
    header = (",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
              "user_feature_2,user_feature_3,user-item_affinity_0,user-item_affinity_1")
    rows = [f"{n},2019-11-24 00:00:{n:02d}+00:00,{n % 2},{1 + n % 3},{n % 2},0.0125,u{n},u1,u2,u3,0.0,0.5"
            for n in range(10)]
    rows[2:2] = ["10,2019-11-32 00:00:00+00:00,1,1,0,0.0125,u,u1,u2,u3,0.0,0.5",
                 "11,2019-11-24 00:00:01+00:00,1,1,-1,0.0125,u,u1,u2,u3,0.0,0.5",
                 "12,2019-11-24 00:00:01+00:00,1,left,0,0.0125,u,u1,u2,u3,0.0,0.5"]
    (campaign / "men.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return Sample(campaign, 10, 3)


def _csv(folder: Path) -> Sample:
    rows = [f"u{n % 3},i{n % 4},{100 + n},{n % 2}" for n in range(10)]
    rows[4:4] = ["u1,i1,100", " ,i3,102,0", "u4,i4,yesterday,0", "u5,i5,103,2"]
    path = folder / "log.csv"
    path.write_text("u,i,t,click\n" + "\n".join(rows) + "\n")
    return Sample(path, 10, 4, ColumnMapping("u", "i", "t", label="click"))


def _parquet(folder: Path) -> Sample:
    table = pa.table({"user": pa.array([1, 2, None, 4, 5, 6, 7, 8, 9, 10, 11, 12], pa.int64()),
                      "item": ["a", "b", "c", "", "e", "f", "g", "h", "i", "j", "k", "l"],
                      "t": [10.0, 20.0, 30.0, 40.0, float("nan"), *range(50, 57)],
                      "clicked": [n % 2 == 0 for n in range(12)]})
    pq.write_table(table, folder / "log.parquet")
    return Sample(folder / "log.parquet", 9, 3, ColumnMapping("user", "item", "t", label="clicked"))


def _simulator(folder: Path) -> Sample:
    return Sample(None, 40, 0, simulator=SimulatorConfig(batch_size=16, total_events=40))


SAMPLES: dict[str, Callable[[Path], Sample]] = {
    "criteo": _criteo, "avazu": _avazu, "movielens-100k": _movielens, "open-bandit": _open_bandit,
    "csv": _csv, "parquet": _parquet, "simulator": _simulator}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_reader_passes_the_contract(fmt: str, tmp_path: Path) -> None:
    assert fmt in SAMPLES, f"write a small {fmt} file with malformed rows in SAMPLES for the reader contract"
    sample = SAMPLES[fmt](tmp_path)

    def open_reader(dead):
        return open_source(fmt, sample.path, dead, batch_size=4, mapping=sample.mapping, simulator=sample.simulator)

    assert check_reader(open_reader, sample.rows, sample.bad) == ["dead_letters", "positions", "seek", "ids"]


def _table(ts: list[float] | None = None, users: pa.Array | None = None) -> pa.Table:
    ts = ts or [float(n) for n in range(12)]
    return pa.table({"ts": ts, "user_id": users if users is not None else pa.array(range(12), pa.int64()),
                     "item_id": pa.array([n % 5 for n in range(12)], pa.int64()),
                     "label": pa.array([n % 2 for n in range(12)], pa.float32())})


class Replay(TableReplay):
    """A well-behaved reader of 12 good rows, which the broken ones below change one way each."""

    def __init__(self, dead, table: pa.Table | None = None) -> None:
        table = table if table is not None else _table()
        super().__init__(table, np.arange(2, table.num_rows + 2), name="broken", batch_size=4)
        self.dead = dead


class StopsAtABadRow(Replay):
    def __iter__(self) -> Iterator:
        yield next(super().__iter__())  # the row after the first chunk was bad: the rest is lost


class NoReason(Replay):
    def __iter__(self) -> Iterator:
        self.dead.put(DeadLetter(self.name, 99, "", ""))
        yield from super().__iter__()


class LettersAGoodRow(Replay):
    def __iter__(self) -> Iterator:
        self.dead.put(DeadLetter(self.name, 2, "bad_label", "label is 2"))  # line 2 still comes out
        yield from super().__iter__()


class CountsDown(Replay):
    def position(self) -> dict:
        return {"row": len(self) - self._next}


class Unsorted(Replay):
    def __init__(self, dead) -> None:
        super().__init__(dead, _table(ts=[float(n % 5) for n in range(12)]))

    def _sorted(self):
        return self._table, self._positions


class IgnoresSeek(Replay):
    def seek(self, position: dict) -> None:
        pass


class FloatIds(Replay):
    def __init__(self, dead) -> None:
        super().__init__(dead, _table(users=pa.array(range(12), pa.float64())))


@pytest.mark.parametrize(("reader", "check", "message"), [
    (Replay, lambda r: check_reader(r, 12, 0), None),
    (StopsAtABadRow, lambda r: check_dead_letters(r, 12, 1), "4 rows came out, not 12"),
    (NoReason, lambda r: check_dead_letters(r, 12, 1), "has no reason"),
    (LettersAGoodRow, lambda r: check_dead_letters(r, 12, 1), r"rows at \[2\] came out and were dead-lettered"),
    (CountsDown, check_positions, "position went from"),
    (Unsorted, check_positions, "event time went back"),
    (IgnoresSeek, check_seek, "after seeking past the first chunk"),
    (FloatIds, check_ids, "ids in 'user_id' are double"),
])
def test_each_reader_check_fails_on_a_reader_that_breaks_it(reader, check, message: str | None) -> None:
    if message is None:
        check(reader)  # the same reader unbroken passes
        return
    with pytest.raises(AssertionError, match=message):
        check(reader)
