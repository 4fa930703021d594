"""EventLog after a crash: open segments discarded, flushed ones kept, torn ones quarantined,
rollback to a checkpoint's offset, one writer at a time; each (source, position) logged once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from freshrec.events import EventChunk
from freshrec.log import EventLog, Recovery

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
REPO = Path(__file__).resolve().parents[2]


def make_chunk(first: int, n: int, ts0: float = T0) -> EventChunk:
    """Rows `first .. first + n - 1` of a source "src", one second apart from `ts0 + first`."""
    ids = np.arange(first, first + n)
    table = pa.table({"ts": ts0 + ids.astype(np.float64), "user_id": ids % 7, "item_id": ids % 5,
                      "label": pa.array(ids % 2, pa.float32())})
    return EventChunk(table, ids.astype(np.int64), "src")


def logged(log: EventLog) -> list[tuple[str, int]]:
    """(source, position) of every row read back."""
    return [pair for c in log.read()
            for pair in zip(c.table.column("source").to_pylist(), c.positions.tolist(), strict=True)]


def assert_exactly_once(log: EventLog, n: int) -> None:
    assert sorted(logged(log)) == [("src", i) for i in range(n)]


def crash_image(root: Path, tmp_path: Path) -> Path:
    """What the disk holds if the writer dies now (its lock dies with it)."""
    return Path(shutil.copytree(root, tmp_path / "after-crash"))


def test_open_segments_are_discarded_and_flushed_ones_kept(tmp_path):
    log = EventLog.open(tmp_path / "log", [])
    log.append(make_chunk(0, 100))
    checkpoint = log.flush()  # the engine checkpoints source position 100 here
    log.append(make_chunk(100, 50))
    log.append(make_chunk(150, 50, ts0=T0 + 3600))  # a second hour, also open
    root = crash_image(tmp_path / "log", tmp_path)

    restored = EventLog.open(root, [])
    assert [p.name for p in restored.recovered.discarded] == [
        ".segment-000000000001.parquet.inprogress", ".segment-000000000002.parquet.inprogress"]
    assert not list(root.rglob("*.inprogress"))
    assert (restored.rows, restored.segments) == (100, 1)
    assert restored.rollback(checkpoint) == 0  # nothing was closed after the checkpoint
    restored.append(make_chunk(100, 50))  # the source delivers them again
    restored.append(make_chunk(150, 50, ts0=T0 + 3600))
    restored.close()
    assert_exactly_once(restored, 200)


def test_rollback_removes_segments_rolled_after_the_checkpoint(tmp_path):
    log = EventLog.open(tmp_path / "log", [], roll_bytes=1)  # every append closes its segment
    log.append(make_chunk(0, 100))
    checkpoint = log.flush()
    log.append(make_chunk(100, 100))
    root = crash_image(tmp_path / "log", tmp_path)

    restored = EventLog.open(root, [])
    assert restored.recovered == Recovery()
    assert restored.rows == 200  # closed after the checkpoint: would be logged twice
    assert restored.rollback(checkpoint) == 100
    restored.append(make_chunk(100, 100))
    restored.flush()
    assert_exactly_once(restored, 200)


def test_a_torn_closed_segment_is_quarantined_not_read(tmp_path, caplog):
    with EventLog(tmp_path, []) as log:
        log.append(make_chunk(0, 100))
        log.append(make_chunk(100, 100, ts0=T0 + 3600))
    torn = next(tmp_path.glob("event_hour=2023-11-14T23/*.parquet"))
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])

    reader = EventLog(tmp_path, [])
    with caplog.at_level(logging.WARNING, logger="freshrec.log"):
        assert reader.rows == 100  # a reader skips it and leaves it to the writer
    assert "unreadable Parquet footer" in caplog.text and torn.exists()

    log = EventLog.open(tmp_path, [])
    assert log.recovered.quarantined == (
        tmp_path / "_quarantine" / "event_hour=2023-11-14T23" / f"{torn.name}.torn",)
    assert not torn.exists() and log.recovered.quarantined[0].exists()
    assert "moved to" in caplog.text
    assert logged(log) == [("src", i) for i in range(100)]
    assert ds.dataset(tmp_path, format="parquet", partitioning="hive").count_rows() == 100
    log.append(make_chunk(100, 1))
    log.flush()
    assert sorted(p.name for p in tmp_path.glob("event_hour=2023-11-14T22/*")) == [
        "segment-000000000000.parquet", "segment-000000000002.parquet"]  # number 1 is not reused
    log.close()   # merges the hour's segments
    assert [p.name for p in tmp_path.glob("event_hour=2023-11-14T22/*")] == ["segment-000000000000.parquet"]


def test_one_writer_while_readers_read(tmp_path):
    writer = EventLog.open(tmp_path, [])
    writer.append(make_chunk(0, 10))
    writer.flush()
    writer.append(make_chunk(10, 10))
    other = EventLog(tmp_path, [])
    assert other.rows == 10 and len(logged(other)) == 10
    with pytest.raises(RuntimeError, match="another EventLog holds _writer.lock"):
        other.append(make_chunk(20, 1))
    assert len(list(tmp_path.rglob("*.inprogress"))) == 1  # the reader left the writer's segment alone
    writer.close()
    assert other.rows == 20  # readers see what the writer closes since
    with EventLog.open(tmp_path, []) as again:  # the lock is free after close
        assert again.recovered == Recovery()


WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from test_log_recovery import make_chunk
from freshrec.log import EventLog
log = EventLog.open(sys.argv[1], [])
log.append(make_chunk(0, 100))
log.flush()
log.append(make_chunk(100, 100))
print("appended", flush=True)
sys.stdin.read()  # holds the lock until killed, however long the test takes
"""


def test_sigkill_of_a_writer_loses_only_what_was_not_flushed(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(Path(__file__).parent)],
                               cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "appended"
        with pytest.raises(RuntimeError, match="_writer.lock"):
            EventLog.open(tmp_path, [])
    finally:
        process.kill()  # SIGKILL: no flush, no cleanup
        process.wait()
        process.stdin.close()
        process.stdout.close()
    log = EventLog.open(tmp_path, [])
    assert len(log.recovered.discarded) == 1
    assert logged(log) == [("src", i) for i in range(100)]
    log.append(make_chunk(100, 100))
    log.close()
    assert_exactly_once(log, 200)
