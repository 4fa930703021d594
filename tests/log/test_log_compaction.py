"""Compaction: an hour's segments merged into one once the hour is quiet, crash-safe, never while a
reader reads, and cut back exactly on a rollback (what a restore keeps is what it kept unmerged)."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.events import EventChunk
from freshrec.log import EventLog, SegmentInfo

T0 = 1_699_999_200.0   # 2023-11-14T22:00:00Z
HOUR = "event_hour=2023-11-14T22"


def chunk(first: int, n: int, ts0: float = T0, source: str = "src") -> EventChunk:
    ids = np.arange(first, first + n)
    table = pa.table({"ts": ts0 + ids.astype(np.float64), "user_id": ids % 7, "item_id": ids % 5,
                      "label": pa.array(ids % 2, pa.float32())})
    return EventChunk(table, ids, source)


def segments(root, hour: str = HOUR) -> list[str]:
    return sorted(p.name for p in (root / hour).glob("*.parquet"))


def positions(log: EventLog) -> list[int]:
    return [p for c in log.read() for p in c.positions.tolist()]


def test_an_hour_split_by_flushes_is_merged_once_no_rows_came_in_an_interval(tmp_path) -> None:
    log = EventLog.open(tmp_path, [])
    log.append(chunk(0, 10))
    log.flush()
    log.append(chunk(10, 10))
    log.flush()                                  # the hour took rows since the flush before: left alone
    assert len(segments(tmp_path)) == 2
    log.append(chunk(0, 5, ts0=T0 + 3600, source="other"))   # another hour only
    mark = log.flush()
    assert segments(tmp_path) == ["segment-000000000000.parquet"] and mark == 3
    merged = SegmentInfo.read(tmp_path / HOUR / "segment-000000000000.parquet")
    assert (merged.rows, merged.parts, merged.positions) == (20, ((0, 10), (1, 10)), {"src": (0, 19)})
    assert positions(log) == list(range(20)) + list(range(5))
    log.close()


def test_close_merges_every_hour_and_the_log_reads_the_same(tmp_path) -> None:
    with EventLog(tmp_path, []) as log:
        for first in range(0, 40, 10):
            log.append(chunk(first, 10, source="a" if first % 20 else "b"))
            log.flush()
        before = positions(log)
    assert segments(tmp_path) == ["segment-000000000000.parquet"]
    assert positions(EventLog(tmp_path, [])) == before == list(range(40))
    assert SegmentInfo.read(tmp_path / HOUR / "segment-000000000000.parquet").positions == {"a": (10, 39),
                                                                                              "b": (0, 29)}


def test_a_rollback_cuts_a_merged_segment_back_to_the_parts_below_the_mark(tmp_path) -> None:
    log = EventLog.open(tmp_path, [])
    log.append(chunk(0, 10))
    mark = log.flush()                           # a checkpoint would store this: 1
    log.append(chunk(10, 10))
    log.close()                                  # merged: parts 0 and 1 in segment 0
    assert segments(tmp_path) == ["segment-000000000000.parquet"]
    log = EventLog.open(tmp_path, [])
    assert log.rollback(mark) == 10
    assert positions(log) == list(range(10))
    assert SegmentInfo.read(tmp_path / HOUR / "segment-000000000000.parquet").parts == ()
    log.append(chunk(10, 3))                     # the source delivers them again: a new number, not 1
    assert log.flush() == 3 and positions(log) == list(range(13))
    log.close()


def test_a_merge_that_crashed_before_deleting_its_parts_reads_once_and_the_writer_tidies(tmp_path) -> None:
    log = EventLog.open(tmp_path, [])
    log.append(chunk(0, 10))
    log.flush()
    log.append(chunk(10, 10))
    log.flush()
    part = tmp_path / HOUR / "segment-000000000001.parquet"
    kept = tmp_path / "kept.parquet"
    shutil.copy(part, kept)
    log.close()                                  # merges, deletes segment 1
    shutil.copy(kept, part)                      # as if the process died just before that delete
    kept.unlink()
    assert positions(EventLog(tmp_path, [])) == list(range(20))   # a reader skips the merged part
    log = EventLog.open(tmp_path, [])
    assert log.recovered.replaced == (part,) and not part.exists()
    log.close()


def test_no_merge_while_a_reader_reads(tmp_path) -> None:
    log = EventLog.open(tmp_path, [])
    for first in (0, 10):
        log.append(chunk(first, 10))
        log.flush()
    reader = EventLog(tmp_path, []).read()
    first = next(reader)                         # holds the readers' lock until it is done
    log.append(chunk(0, 1, ts0=T0 + 3600))
    log.flush()
    assert len(segments(tmp_path)) == 2
    assert [p for c in [first, *reader] for p in c.positions.tolist()] == list(range(20))
    log.append(chunk(1, 1, ts0=T0 + 3600))
    log.flush()
    assert len(segments(tmp_path)) == 1 and pq.read_table(tmp_path / HOUR / segments(tmp_path)[0]).num_rows == 20
    log.close()


def test_duckdb_reads_the_compacted_log_as_a_hive_partitioned_dataset(tmp_path) -> None:
    with EventLog(tmp_path, []) as log:
        for first in range(0, 30, 10):
            log.append(chunk(first, 10))
            log.append(chunk(first, 10, ts0=T0 + 3600, source="other"))
            log.flush()
    rows = duckdb.sql(f"SELECT event_hour, count(*), min(position), max(position) FROM read_parquet("
                      f"'{tmp_path}/*/*.parquet', hive_partitioning = true) GROUP BY event_hour ORDER BY 1").fetchall()
    assert rows == [("2023-11-14T22", 30, 0, 29), ("2023-11-14T23", 30, 0, 29)]
    assert len(segments(tmp_path)) == len(segments(tmp_path, "event_hour=2023-11-14T23")) == 1
