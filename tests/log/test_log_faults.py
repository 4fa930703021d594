"""EventLog under write faults: retried with backoff, then `LogWriteError`; a refused chunk leaves the
log as it was, held rows are written once the disk recovers, and no row is lost or logged twice."""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pytest

from freshrec._durable import WRITE_FAULTS
from freshrec.events import EventChunk, Field, FieldKind
from freshrec.log import EventLog, LogRetry, LogWriteError, layout

FIELDS = (Field("genre", FieldKind.CATEGORICAL),)
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z; the next hour starts at T0 + 2800
NEXT_HOUR = T0 + 2800


def make_chunk(ts: list[float], first: int = 0) -> EventChunk:
    n = len(ts)
    table = pa.table({"ts": pa.array(ts, pa.float64()), "user_id": [f"u{i}" for i in range(n)],
                      "item_id": ["i"] * n, "label": pa.array([1.0] * n, pa.float32()), "genre": ["g"] * n})
    return EventChunk(table, np.arange(first, first + n, dtype=np.int64), "src")


def logged_positions(log: EventLog) -> list[int]:
    return sorted(p for chunk in log.read() for p in chunk.positions.tolist())


def left_over(root) -> list[str]:
    return [p.name for p in root.rglob("*.inprogress")]


def _log(root, waits: list[float]) -> EventLog:
    return EventLog.open(root, FIELDS, retry=LogRetry(attempts=3, initial=0.5, cap=1.0, sleep=waits.append))


def _failures() -> float:
    return WRITE_FAULTS.get_sample_value("freshrec_write_failures_total", {"target": "log"}) or 0.0


def test_a_chunk_the_log_cannot_open_a_segment_for_is_refused_whole(tmp_path) -> None:
    waits: list[float] = []
    log = _log(tmp_path, waits)
    log.append(make_chunk([T0, T0 + 1]))                         # hour 0 is open and fine
    blocked = layout.folder(tmp_path, layout.hour_name(layout.hours_of(np.array([NEXT_HOUR]))[0]))
    blocked.write_text("not a directory")                       # hour 1 cannot get a folder
    before = _failures()
    with pytest.raises(LogWriteError, match="could not open a segment in 3 tries") as refused:
        log.append(make_chunk([T0 + 2, NEXT_HOUR], first=2))
    assert not refused.value.held and waits == [0.5, 1.0] and _failures() == before + 3
    blocked.unlink()
    assert log.append(make_chunk([T0 + 2, NEXT_HOUR], first=2)) == 2    # appended again, once
    log.flush()
    assert logged_positions(log) == [0, 1, 2, 3] and log.rows == 4


def test_rows_held_through_a_full_disk_are_written_once_it_recovers(tmp_path, monkeypatch) -> None:
    waits: list[float] = []
    log = _log(tmp_path, waits)
    log.append(make_chunk([T0, T0 + 1, T0 + 2]))
    real = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(LogWriteError, match="No space left on device") as held:
        log.flush()                                              # no checkpoint may follow this
    assert held.value.held and log.rows == 0
    log.append(make_chunk([T0 + 3], first=3))                    # the log takes more meanwhile...
    monkeypatch.setattr(os, "fsync", real)
    log.flush()                                                  # ...and writes it all when it can
    assert logged_positions(log) == [0, 1, 2, 3] and log.rows == 4
    assert left_over(tmp_path) == []                             # the failed file is gone


def test_a_close_whose_rename_landed_is_not_written_twice(tmp_path, monkeypatch) -> None:
    log = _log(tmp_path, [])
    log.append(make_chunk([T0, T0 + 1]))
    real = layout.fsync_dir
    calls = [0]

    def flaky(path) -> None:                                     # the folder's fsync after the rename
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(path)
    monkeypatch.setattr("freshrec.log.segment.fsync_dir", flaky)
    assert log.flush() == 1
    assert log.rows == 2 and log.segments == 1
