"""The live journal: append and reopen, seek, commit deleting old segments, a torn tail; the live
queue on a journal (positions are journal rows, seek replays) and `WithLive` positions with it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.event import Event, Field, FieldKind
from freshrec.events.journal import JournalError, LiveJournal
from freshrec.events.live import LiveQueue
from freshrec.events.source import LimitedSource, TableReplay
from freshrec.events.with_live import WithLive

FIELDS = (Field("age", FieldKind.CATEGORICAL, "user"), Field("price", FieldKind.DENSE, "item"))
SCHEMA = pa.schema([("ts", pa.float64()), ("user_id", pa.string())])


def table(*ts: float) -> pa.Table:
    return pa.table({"ts": list(ts), "user_id": [f"u{t:g}" for t in ts]}, schema=SCHEMA)


def events(*users: int, kind: str = "click") -> list[Event]:
    return [Event(f"e{u}", 100.0 + u, u, "i", kind, {"price": float(u)}, label=1.0) for u in users]


def users(chunks) -> list[str]:
    return [u for chunk in chunks for u in chunk.table.column("user_id").to_pylist()]


def segments(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.arrow"))


def test_appends_survive_reopening_with_their_rows_kind_and_entry_time(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA)
    assert journal.append(table(1.0, 2.0), "click", entered=50.0) == 0
    assert journal.append(table(3.0)) == 2
    journal.close()
    again = LiveJournal.open(tmp_path, SCHEMA)
    assert (again.rows, again.first, again.committed) == (3, 0, 0)
    read = [(first, b.table.column("ts").to_pylist(), b.kind, b.entered) for first, b in again.read(0)]
    assert read == [(0, [1.0, 2.0], "click", 50.0), (2, [3.0], "impression", None)]
    assert again.append(table(4.0)) == 3                   # appending goes on after the rows found
    assert [f for f, _ in LiveJournal.open(tmp_path, SCHEMA).read(0)] == [0, 2, 3]


def test_reading_from_a_row_inside_a_batch_cuts_it(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA)
    journal.append(table(1.0, 2.0, 3.0))
    assert journal.batch_at(1).table.column("ts").to_pylist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="outside 0..2"):
        journal.batch_at(3)


def test_commit_deletes_closed_segments_before_it_and_rows_keep_their_numbers(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA, segment_bytes=1)   # a segment per append
    for ts in (1.0, 2.0, 3.0, 4.0):
        journal.append(table(ts, ts + 0.5))
    assert len(segments(tmp_path)) == 4
    journal.commit(5)                                        # rows 0..4 learned: segments 0 and 2 go
    assert segments(tmp_path) == [f"{4:020d}.arrow", f"{6:020d}.arrow"]
    assert journal.first == 4 and journal.committed == 5
    with pytest.raises(ValueError, match="outside 4..7"):
        journal.batch_at(1)
    journal.commit(8)                                        # the open segment always stays
    assert segments(tmp_path) == [f"{6:020d}.arrow"]
    journal.close()
    again = LiveJournal.open(tmp_path, SCHEMA, segment_bytes=1)
    assert (again.first, again.rows, again.committed) == (6, 8, 8)
    assert again.append(table(9.0)) == 8


def test_a_torn_tail_is_cut_off_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA)
    journal.append(table(1.0))
    journal.append(table(2.0, 3.0))
    journal.close()
    (path,) = tmp_path.glob("*.arrow")
    os.truncate(path, path.stat().st_size - 7)               # the second write was cut short by a crash
    with caplog.at_level(logging.WARNING):
        again = LiveJournal.open(tmp_path, SCHEMA)
    assert "torn tail" in caplog.text
    assert again.rows == 1 and [b.table.num_rows for _, b in again.read(0)] == [1]
    assert again.append(table(4.0)) == 1                     # the next write lands where the torn one was
    assert [b.table.column("ts").to_pylist() for _, b in LiveJournal.open(tmp_path, SCHEMA).read(0)] == [[1.0], [4.0]]


def test_garbage_after_the_last_batch_and_a_headless_segment_are_cut_off(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA, segment_bytes=1)
    journal.append(table(1.0))
    journal.append(table(2.0))
    journal.close()
    first, last = sorted(tmp_path.glob("*.arrow"))
    with open(last, "ab") as file:
        file.write(b"\xff\xff\xff\xff\x10\x00")              # half a message header
    assert LiveJournal.open(tmp_path, SCHEMA).rows == 2
    last.write_bytes(b"\xff\xff")                            # not even the schema
    again = LiveJournal.open(tmp_path, SCHEMA)
    assert again.rows == 1 and again.append(table(3.0)) == 1


def test_another_schema_or_a_missing_segment_is_refused(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA, segment_bytes=1)
    for ts in (1.0, 2.0, 3.0):
        journal.append(table(ts))
    journal.close()
    with pytest.raises(ValueError, match="another schema"):
        LiveJournal.open(tmp_path, pa.schema([("ts", pa.float64())]))
    (tmp_path / f"{1:020d}.arrow").unlink()
    with pytest.raises(ValueError, match="a segment is missing"):
        LiveJournal.open(tmp_path, SCHEMA)


def test_a_failed_write_accepts_nothing(tmp_path: Path) -> None:
    journal = LiveJournal.open(tmp_path, SCHEMA)
    journal.append(table(1.0))

    class Full:          # the segment's file, refusing writes like a full disk
        def __init__(self, file) -> None:
            self.file = file

        def write(self, data: bytes) -> int:
            self.file.write(data[:5])
            self.file.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.file, name)

    journal._file = Full(journal._file)
    with pytest.raises(JournalError, match="No space left"):
        journal.append(table(2.0))
    journal._file = journal._file.file
    assert journal.rows == 1 and journal.append(table(3.0)) == 1
    journal.close()
    assert [b.table.column("ts").to_pylist() for _, b in LiveJournal.open(tmp_path, SCHEMA).read(0)] == [[1.0], [3.0]]


def test_a_journaled_queue_hands_out_what_no_commit_covered_after_reopening(tmp_path: Path) -> None:
    queue = LiveQueue(FIELDS, journal=tmp_path)
    assert queue.durable and queue.put(events(1, 2)) == 2 and queue.put(events(3)) == 1
    first = queue.poll(timeout=0.0)
    assert users([first]) == ["1", "2"] and first.kind == "click" and first.positions.tolist() == [0, 1]
    assert queue.position() == {"row": 2} and len(queue) == 1
    queue.commit({"row": 2})
    queue.close()
    again = LiveQueue(FIELDS, journal=tmp_path)             # a restart: row 2 on, never rows 0 and 1
    assert again.position() == again.committed() == {"row": 2} and len(again) == 1
    chunk = again.poll(timeout=0.0)
    assert users([chunk]) == ["3"] and chunk.positions.tolist() == [2]
    assert chunk.table.column("price").to_pylist() == [3.0]
    assert again.poll(timeout=0.0) is None


def test_a_journaled_queue_seeks_back_and_refuses_rows_it_deleted(tmp_path: Path) -> None:
    queue = LiveQueue(FIELDS, journal=tmp_path)
    for u in range(4):
        queue.put(events(u))
    assert users(iter(lambda: queue.poll(timeout=0.0), None)) == ["0", "1", "2", "3"]
    queue.seek({"row": 1})
    assert users(iter(lambda: queue.poll(timeout=0.0), None)) == ["1", "2", "3"]
    with pytest.raises(ValueError, match="outside the journal's rows"):
        queue.seek({"row": 9})
    memory = LiveQueue(FIELDS)
    with pytest.raises(ValueError, match="without a journal cannot seek"):
        memory.seek({"row": 1})


def test_a_bad_event_reaches_no_journal(tmp_path: Path) -> None:
    queue = LiveQueue(FIELDS, journal=tmp_path)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        queue.put([*events(1), Event("bad", 1.0, 2, "i", label=-1)])
    queue.close()
    assert LiveJournal.open(tmp_path, queue.empty().table.schema).rows == 0


def replay(rows: int) -> TableReplay:
    return TableReplay(pa.table({"ts": np.arange(rows, dtype=float), "user_id": [f"s{n}" for n in range(rows)],
                                 "item_id": ["i"] * rows}), np.arange(rows), name="demo", batch_size=2)


def test_with_live_positions_hold_the_live_rows_handed_out_at_each_chunk(tmp_path: Path) -> None:
    live = LiveQueue(FIELDS, journal=tmp_path)
    live.put(events(1))
    source = WithLive(LimitedSource(replay(4), 4), live, follow=False)
    seen = []
    for chunk in source:
        seen.append((users([chunk]), source.position()))
        if chunk.source == "demo" and chunk.positions[0] == 0:
            live.put(events(2))                              # posted while the stream runs
    assert seen == [(["1"], {"row": 0, "limited": 0, "live": 1}),
                    (["s0", "s1"], {"row": 2, "limited": 2, "live": 1}),
                    (["2"], {"row": 2, "limited": 2, "live": 2}),     # the stream's next chunk not read yet
                    (["s2", "s3"], {"row": 4, "limited": 4, "live": 2})]
    source.commit({"row": 2, "limited": 2, "live": 1})
    assert source.committed() == {"row": 2, "live": 1} and live.journal.committed == 1


def test_with_live_seek_resumes_both_exactly_once(tmp_path: Path) -> None:
    live = LiveQueue(FIELDS, journal=tmp_path)
    for u in (1, 2, 3):
        live.put(events(u))
    live.close()
    # a restart from a checkpoint that learned the stream's first chunk and live row 0
    again = LiveQueue(FIELDS, journal=tmp_path)
    source = WithLive(replay(4), again, follow=False)
    source.seek({"row": 2, "live": 1})
    assert users(source) == ["2", "3", "s2", "s3"]
    assert source.position() == {"row": 4, "live": 3}
    # a position without "live" (a run that did not serve) resumes at the committed row
    again.commit({"row": 2})
    later = WithLive(replay(4), LiveQueue(FIELDS, journal=tmp_path), follow=False)
    later.seek({"row": 4})
    assert users(later) == ["3"]


def test_without_a_journal_positions_are_the_streams() -> None:
    source = WithLive(replay(2), LiveQueue(FIELDS), follow=False)
    assert [len(c) for c in source] == [2] and source.position() == {"row": 2}
    source.seek({"row": 0})
    assert source.position() == {"row": 0}
