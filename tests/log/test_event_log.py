"""EventLog: append, hour partitions, rolling, flush, reading back (ranges, order, any Parquet tool)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from freshrec.events import EventChunk, Field, FieldKind, Simulator, SimulatorConfig
from freshrec.events.live import conform
from freshrec.features import FeaturePipeline, default_specs
from freshrec.log import EventLog

FIELDS = (Field("genre", FieldKind.CATEGORICAL), Field("price", FieldKind.DENSE))
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z; the hour starts at T0 - 800
HOUR0 = T0 - 800


def make_chunk(ts, source="src", first=0, **columns) -> EventChunk:
    n = len(ts)
    table = pa.table({"ts": pa.array(ts, pa.float64()),
                      "user_id": pa.array([i % 5 for i in range(n)], pa.int64()),
                      "item_id": pa.array([f"i{i % 3}" for i in range(n)]),
                      "label": pa.array([i % 2 for i in range(n)], pa.float32()),
                      "genre": pa.array([f"g{i % 4}" for i in range(n)]),
                      "price": pa.array([float(i) for i in range(n)]), **columns})
    return EventChunk(table, np.arange(first, first + n, dtype=np.int64), source)


def read_all(log: EventLog, start=None, end=None) -> pa.Table:
    """Every chunk read back as one table, with the positions as a `position` column."""
    tables = [c.table.append_column("position", pa.array(c.positions)) for c in log.read(start, end)]
    return pa.concat_tables(tables) if tables else log.schema.empty_table()


def files(root, pattern="**/*"):
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())


def simulator(total=3000) -> Simulator:
    # 0.5 events per second from 22:13:20: 3000 events span ~100 minutes, two event hours.
    return Simulator(SimulatorConfig(n_users=50, n_items=20, batch_size=500, total_events=total,
                                     events_per_second=0.5))


def test_round_trip_equal_content_in_event_time_order(tmp_path):
    sim = simulator()
    chunks = list(sim)[::-1]  # appended out of event-time order
    with EventLog(tmp_path, sim.fields) as log:
        for chunk in chunks:
            log.append(chunk)
        log.flush()
        got = read_all(log)
    expected = pa.concat_tables([
        conform(c.table, sim.fields).append_column("source", pa.array([c.source] * len(c)))
        .append_column("position", pa.array(c.positions)) for c in chunks])
    expected = expected.take(pc.sort_indices(expected, [("ts", "ascending")]))
    assert got.column_names == expected.column_names
    assert got.equals(expected)
    assert np.all(np.diff(got.column("ts").to_numpy()) >= 0)
    assert sorted(got.column("position").to_pylist()) == list(range(3000))


def test_rows_are_partitioned_by_the_utc_hour_of_their_ts(tmp_path):
    log = EventLog(tmp_path, FIELDS)
    log.append(make_chunk([HOUR0 + 10, HOUR0 + 3600, HOUR0 - 1, HOUR0 + 3599.5]))
    log.flush()
    assert files(tmp_path, "event_hour=*/*") == [
        "event_hour=2023-11-14T21/segment-000000000000.parquet",
        "event_hour=2023-11-14T22/segment-000000000001.parquet",
        "event_hour=2023-11-14T23/segment-000000000002.parquet"]
    for path in tmp_path.glob("event_hour=*/*.parquet"):
        start = np.datetime64(path.parent.name.split("=")[1], "h").astype(np.int64) * 3600.0
        ts = pq.read_table(path).column("ts").to_numpy()
        assert np.all((ts >= start) & (ts < start + 3600))
    assert (log.rows, log.segments) == (4, 3)


def test_a_replay_spanning_many_hours_holds_little_memory_per_open_segment(tmp_path):
    # a historical file (MovieLens: 100k ratings over ~2,200 event hours) opens a segment per hour
    # between two flushes; each open segment's write buffer is allocated when it opens
    log = EventLog(tmp_path, FIELDS)
    before = pa.total_allocated_bytes()
    log.append(make_chunk(HOUR0 + 3600.0 * np.arange(300)))
    per_segment = (pa.total_allocated_bytes() - before) / 300
    assert per_segment < 128 * 1024, per_segment
    assert log.flush() == 300


def test_flush_closes_open_segments_with_their_figures(tmp_path):
    log = EventLog(tmp_path, FIELDS)
    log.append(make_chunk([T0 + 5, T0 + 1], source="a", first=10))
    log.append(make_chunk([T0 + 3], source="b", first=7))
    assert files(tmp_path, "event_hour=*/*") == ["event_hour=2023-11-14T22/.segment-000000000000.parquet.inprogress"]
    assert (log.rows, log.segments, list(log.read())) == (0, 0, [])  # not readable before the flush
    assert log.flush() == 1
    [path] = tmp_path.glob("event_hour=*/*")
    assert path.name == "segment-000000000000.parquet"
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}
    assert meta["freshrec.rows"] == "3"
    assert (float(meta["freshrec.ts_min"]), float(meta["freshrec.ts_max"])) == (T0 + 1, T0 + 5)
    assert json.loads(meta["freshrec.positions"]) == {"a": [10, 11], "b": [7, 7]}
    assert (log.rows, log.segments) == (3, 1)
    assert log.flush() == 1  # nothing open: no new segment


def test_segment_rolls_by_size(tmp_path):
    log = EventLog(tmp_path, FIELDS, roll_bytes=1)
    for i in range(3):
        log.append(make_chunk([T0 + i], first=i))
    assert files(tmp_path, "event_hour=*/*") == [
        f"event_hour=2023-11-14T22/segment-00000000000{i}.parquet" for i in range(3)]
    assert (log.rows, log.segments) == (3, 3)


def test_segment_rolls_by_age_on_the_injected_clock(tmp_path):
    now = [0.0]
    log = EventLog(tmp_path, FIELDS, roll_seconds=10.0, clock=lambda: now[0])
    log.append(make_chunk([T0]))
    now[0] = 5.0
    log.append(make_chunk([T0 + 1], first=1))
    assert log.segments == 0
    now[0] = 10.0
    log.append(make_chunk([T0 + 3600], first=2))  # another hour: its new segment is young
    assert (log.segments, log.rows) == (1, 2)
    assert [p.name for p in tmp_path.glob("event_hour=2023-11-14T23/*")] == [".segment-000000000001.parquet.inprogress"]
    now[0] = 20.0
    log.append(make_chunk([], first=3))  # ages are checked even by an empty append
    assert (log.segments, log.rows) == (2, 3)


def test_time_range_reads_are_half_open_and_cross_hours(tmp_path):
    ts = [HOUR0 - 10, HOUR0, HOUR0 + 1800, HOUR0 + 3600, HOUR0 + 7300]
    with EventLog(tmp_path, FIELDS, roll_bytes=1) as log:
        log.append(make_chunk(ts))
    with EventLog(tmp_path, FIELDS) as log:
        assert read_all(log, HOUR0, HOUR0 + 3600).column("ts").to_pylist() == [HOUR0, HOUR0 + 1800]
        assert read_all(log, HOUR0 + 1, None).column("ts").to_pylist() == ts[2:]
        assert read_all(log, None, HOUR0 + 1).column("ts").to_pylist() == ts[:2]
        assert read_all(log, HOUR0 + 10_000, None).num_rows == 0


def test_ties_keep_append_order_across_segments_and_sources(tmp_path):
    log = EventLog(tmp_path, FIELDS, roll_bytes=1)
    for i, source in zip(range(6), itertools.cycle("ab")):
        log.append(make_chunk([T0, T0 - 1], source=source, first=10 * i))
    chunks = list(log.read())
    assert [c.source for c in chunks] == ["a,b"]
    table = chunks[0].table
    assert table.column("source").to_pylist()[6:] == list("ababab")
    assert chunks[0].positions.tolist() == [1, 11, 21, 31, 41, 51, 0, 10, 20, 30, 40, 50]
    pairs = list(zip(table.column("source").to_pylist(), chunks[0].positions.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # each (source, position) once


def test_root_reads_as_a_hive_dataset_with_any_parquet_tool(tmp_path):
    sim = simulator()
    log = EventLog(tmp_path, sim.fields)
    for chunk in sim:
        log.append(chunk)
    log.flush()
    log.append(make_chunk([T0], first=5000, hour=pa.array([3])))  # left open: .inprogress
    (tmp_path / "_quarantine").mkdir()
    (tmp_path / "_quarantine" / "junk.parquet.torn").write_bytes(b"PAR1 torn")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 3000
    assert set(table.column("event_hour").to_pylist()) == {"2023-11-14T22", "2023-11-14T23"}
    # the source's own `hour` column keeps its values (a partition key named `hour` would overwrite it)
    mine = read_all(log)
    assert sorted(table.column("hour").to_pylist()) == sorted(mine.column("hour").to_pylist())
    assert set(table.column("hour").to_pylist()) != {"2023-11-14T22", "2023-11-14T23"}
    assert pq.read_table(tmp_path).num_rows == 3000


def test_batches_go_through_the_feature_pipeline(tmp_path):
    sim = simulator(total=1500)
    with EventLog(tmp_path, sim.fields) as log:
        for chunk in sim:
            log.append(chunk)
    log = EventLog(tmp_path, sim.fields)
    pipeline = FeaturePipeline(default_specs(sim.fields))
    batches = list(log.batches(pipeline, batch_size=256))
    rows = read_all(log)
    assert all(len(b) <= 256 for b in batches) and sum(len(b) for b in batches) == 1500
    assert np.array_equal(np.concatenate([b.ts.numpy() for b in batches]), rows.column("ts").to_numpy())
    assert np.array_equal(np.concatenate([b.labels.numpy() for b in batches]), rows.column("label").to_numpy())
    assert batches[0].sparse.keys() == [s.name for s in default_specs(sim.fields) if s.is_sparse]
    window = list(log.batches(pipeline, T0, T0 + 600, batch_size=10_000))
    assert sum(len(b) for b in window) == int(pc.sum(pc.and_(pc.greater_equal(rows["ts"], T0),
                                                             pc.less(rows["ts"], T0 + 600))).as_py())


@pytest.mark.parametrize(("ts", "message"), [
    (None, "no 'ts' column"),
    (pa.array([T0, None], pa.float64()), "1 rows have a null 'ts'"),
    (pa.array([T0, float("nan")]), "1 rows have a 'ts' that is not a finite number"),
    (pa.array(["yesterday", "today"]), "does not fit the log's columns"),
])
def test_bad_chunks_raise_and_leave_the_log_as_it_was(tmp_path, ts, message):
    log = EventLog(tmp_path, FIELDS)
    log.append(make_chunk([T0]))
    log.flush()
    before = files(tmp_path)
    good = make_chunk([T0, T0 + 1], first=1)
    table = good.table.drop_columns(["ts"]) if ts is None else good.table.set_column(0, "ts", ts)
    with pytest.raises(ValueError, match=message):
        log.append(EventChunk(table, good.positions, "bad"))
    assert files(tmp_path) == before
    log.close()
    assert (log.rows, files(tmp_path)) == (1, before)


def test_a_field_named_like_a_log_column_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'source' clashes"):
        EventLog(tmp_path, [Field("source", FieldKind.CATEGORICAL)]).append(make_chunk([T0]))


def test_fields_added_later_read_as_nulls_in_older_segments(tmp_path):
    with EventLog(tmp_path, FIELDS[:1]) as log:
        log.append(make_chunk([T0]))
    with EventLog(tmp_path, FIELDS) as log:
        log.append(make_chunk([T0 + 1], first=1))
    table = read_all(EventLog(tmp_path, FIELDS))
    assert table.column("price").to_pylist() == [None, 0.0]
    assert table.column("genre").to_pylist() == ["g0", "g0"]
