"""Where the event log keeps its files, and what their names say.

```
root/
  _writer.lock                                    flock of the one process that appends
  event_hour=2023-11-14T22/                       Hive partition: the UTC hour of the rows' `ts`
    segment-000000000007.parquet                  closed: complete, fsynced, never changed again
    .segment-000000000009.parquet.inprogress      open: being written (hidden from Parquet tools)
  _quarantine/event_hour=2023-11-14T22/segment-000000000003.parquet.torn
```
Segment numbers grow over the whole log, not per hour, so they order segments by the time they
were opened and let a checkpoint name a point in the log (see `EventLog.flush`). Names that
start with `.` or `_` are skipped by pyarrow.dataset, Spark and Hive, and `*.parquet` globs
(DuckDB) skip the `.inprogress` and `.torn` suffixes, so `root` reads as a dataset at any time.

The partition key is `event_hour`, not `hour`: sources have an `hour` field of their own (the
simulator's) and Hive readers would overwrite that column with the folder's value.

>>> name = hour_name(hours_of(np.array([1_700_000_000.0]))[0])
>>> name, hour_start(name), closed_name(7), seq_of(Path(open_name(9)))
('2023-11-14T22', 1699999200.0, 'segment-000000000007.parquet', 9)
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import numpy as np

from freshrec._durable import fsync_dir, fsync_file

__all__ = ["LOCK", "PARTITION", "QUARANTINE", "closed_name", "closed_segments", "discard_open",
           "folder", "fsync_dir", "fsync_file", "hour_name", "hour_start", "hours_of", "lock",
           "open_name", "quarantine", "seq_of", "top_seq"]

PARTITION = "event_hour"
QUARANTINE = "_quarantine"
LOCK = "_writer.lock"
_SEQ = re.compile(r"^\.?segment-(\d+)\.parquet")
_HOUR = 3600


def hours_of(ts: np.ndarray) -> np.ndarray:
    """Hours since the epoch (UTC, int64) of epoch-second times."""
    return np.floor(ts / _HOUR).astype(np.int64)


def hour_name(hour: int) -> str:
    """`YYYY-MM-DDTHH` of an hour since the epoch."""
    return str(np.datetime64(int(hour), "h"))


def hour_start(name: str) -> float:
    """Epoch seconds at which the hour `YYYY-MM-DDTHH` starts."""
    return float(np.datetime64(name, "h").astype(np.int64) * _HOUR)


def folder(root: Path, hour: str) -> Path:
    """The partition folder of an hour."""
    return root / f"{PARTITION}={hour}"


def closed_name(seq: int) -> str:
    return f"segment-{seq:012d}.parquet"


def open_name(seq: int) -> str:
    return f".{closed_name(seq)}.inprogress"


def seq_of(path: Path) -> int:
    """The segment number in a segment's file name (open, closed or quarantined)."""
    match = _SEQ.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a segment file name")
    return int(match.group(1))


def _segment_files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(f"{PARTITION}=*/{pattern}"), key=seq_of)


def closed_segments(root: Path) -> list[Path]:
    """Every closed segment under `root`, in segment-number order."""
    return _segment_files(root, "segment-*.parquet")


def top_seq(root: Path) -> int:
    """The highest segment number used by a closed or quarantined segment (-1 if none)."""
    paths = [*closed_segments(root), *root.glob(f"{QUARANTINE}/{PARTITION}=*/segment-*")]
    return max(map(seq_of, paths), default=-1)


def discard_open(root: Path) -> tuple[Path, ...]:
    """Delete the open segments a crashed writer left; returns their paths."""
    paths = tuple(_segment_files(root, ".segment-*.parquet.inprogress"))
    for path in paths:
        path.unlink()
    for parent in {p.parent for p in paths}:
        fsync_dir(parent)
    return paths


def quarantine(root: Path, path: Path) -> Path:
    """Move a torn closed segment to `root/_quarantine/<its hour folder>/<name>.torn`."""
    target = root / QUARANTINE / path.parent.name / f"{path.name}.torn"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    fsync_dir(target.parent)
    fsync_dir(path.parent)
    return target


def lock(root: Path) -> int:
    """Take the log's writer lock (released when the fd is closed or the process dies); returns
    the fd. RuntimeError when another writer holds it."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{root}: another EventLog holds {LOCK}; a log has one writer "
                           "(readers may read while it writes)") from None
    return fd
