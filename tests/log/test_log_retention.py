"""EventLog's retention: each flush deletes the closed segments past it (in event time), never while
a reader reads, and a rollback after it still cuts the log back to its checkpoint."""

from __future__ import annotations

import pytest
from test_event_log import FIELDS, HOUR0, make_chunk, read_all

from freshrec.log import EventLog, compact

DAY = 86_400.0


def _days(log: EventLog, days: range, first: int = 0) -> None:
    """One chunk of 10 events in each of `days` (at noon), a segment each (the log rolls every byte)."""
    for day in days:
        log.append(make_chunk([HOUR0 + day * DAY + k for k in range(10)], first=first + 10 * day))


def test_a_flush_deletes_the_segments_past_the_retention_and_keeps_the_rest(tmp_path):
    with EventLog(tmp_path, FIELDS, roll_bytes=1, retention=2.5 * DAY) as log:
        _days(log, range(6))
        log.flush()
        kept = read_all(log).column("ts").to_pylist()
        assert min(kept) >= HOUR0 + 5 * DAY + 9 - 2.5 * DAY and len(kept) == 30   # days 3, 4 and 5
        assert log.expired == 30 and log.rows == 30
        assert len(list(tmp_path.glob("event_hour=*"))) == 3   # the emptied hours' folders are gone


def test_no_segment_is_deleted_while_a_reader_reads(tmp_path):
    with EventLog(tmp_path, FIELDS, roll_bytes=1, retention=DAY) as log:
        _days(log, range(3))
        with compact.reading(tmp_path):
            log.flush()
            assert log.expired == 0 and read_all(EventLog(tmp_path, FIELDS)).num_rows == 30
        log.flush()   # day 0 is more than a day older than day 2's last event; day 1 is not
        assert log.expired == 10 and read_all(log).num_rows == 20


def test_a_rollback_after_the_retention_cuts_back_what_came_after_the_checkpoint(tmp_path):
    with EventLog(tmp_path, FIELDS, roll_bytes=1, retention=1.5 * DAY) as log:
        _days(log, range(3))
        checkpoint = log.flush()           # keeps days 1 and 2
        _days(log, range(3, 5))            # then days 3 and 4: past the checkpoint
        log.flush()                        # keeps days 3 and 4
    with EventLog.open(tmp_path, FIELDS, retention=1.5 * DAY) as log:
        assert log.rollback(checkpoint) == 20
        assert read_all(log).num_rows == 0   # days 1 and 2 went with the retention; nothing is read twice


def test_a_retention_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="retention must be > 0 seconds, not 0"):
        EventLog(tmp_path, FIELDS, retention=0)
