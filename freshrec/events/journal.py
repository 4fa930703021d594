"""`LiveJournal`: the durable, append-only record of the live events a `LiveQueue` accepted, so that
a restart learns again the events that no checkpoint covered instead of losing them.

The journal is a folder of segments, `{first row:020d}.arrow`, each an Arrow IPC stream (the schema,
then one record batch per accepted request, with its event kind and entry time as the batch's
metadata), and `committed.json`, the row up to which a checkpoint holds the events' effect. Rows are
numbered from the first ever appended, so a row's number is stable; it is the live queue's position.
`append` writes a batch and fsyncs it before it returns (a request is acknowledged only after);
a failed write is cut off again and raised as `JournalError`. A segment closes at `segment_bytes`;
`commit(row)` deletes the closed segments that lie wholly before `row`, so the folder holds what is
not yet committed (and the open segment). On `open`, a torn last batch (a crash in the middle of a
write) is cut off with a warning; what lies before it is kept.

>>> import tempfile, pyarrow as pa
>>> folder = tempfile.mkdtemp()
>>> journal = LiveJournal.open(folder, pa.schema([("ts", pa.float64())]))
>>> journal.append(pa.table({"ts": [1.0, 2.0]}), "click", entered=10.0), journal.append(pa.table({"ts": [3.0]}))
(0, 2)
>>> journal.close(); journal = LiveJournal.open(folder, pa.schema([("ts", pa.float64())]))
>>> journal.rows, [(first, b.table.column("ts").to_pylist(), b.kind) for first, b in journal.read(1)]
(3, [(1, [2.0], 'click'), (2, [3.0], 'impression')])
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from freshrec._durable import WRITE_FAILURES, fsync_dir, fsync_file

__all__ = ["JournalBatch", "JournalError", "LiveJournal"]

logger = logging.getLogger(__name__)

SUFFIX, COMMITTED = ".arrow", "committed.json"


class JournalError(OSError):
    """The journal could not make an append durable (disk full, folder gone): nothing was accepted."""


@dataclass(frozen=True)
class JournalBatch:
    """What one `append` recorded: the rows, their event kind and the time they entered (epoch s)."""

    table: pa.Table
    kind: str
    entered: float | None


@dataclass(frozen=True)
class _Entry:
    """Where one appended batch lies: rows `first..first+rows`, bytes `start..stop` of `segment`."""

    first: int
    rows: int
    segment: Path
    start: int
    stop: int


class LiveJournal:
    """The live events accepted so far, in segments under `folder` (see the module docstring).

    `rows`: rows ever appended (the next row's number); `first`: the first row still on disk;
    `committed`: the committed row. `append` may be called from any thread; `read` too.
    """

    def __init__(self, folder: Path, schema: pa.Schema, segment_bytes: int) -> None:
        """Use `LiveJournal.open`: it finds the rows already there."""
        self.folder, self.schema, self.segment_bytes = folder, schema, segment_bytes
        self._header = schema.serialize().to_pybytes()
        self._entries: list[_Entry] = []
        self._firsts: list[int] = []   # each entry's first row, for bisection
        self._segments: list[tuple[int, Path]] = []   # (first row, path), oldest first
        self._file = None
        self._size = 0
        self.rows = self.committed = 0
        self._lock = threading.Lock()
        self._broken: str | None = None

    @classmethod
    def open(cls, folder: str | Path, schema: pa.Schema, segment_bytes: int = 8 << 20) -> LiveJournal:
        """The journal in `folder` (created if missing), its torn tail cut off; ValueError when it
        holds events of another schema or a segment is missing."""
        journal = cls(Path(folder), schema, segment_bytes)
        journal.folder.mkdir(parents=True, exist_ok=True)
        for stale in journal.folder.glob("*.tmp"):
            stale.unlink()
        committed = journal.folder / COMMITTED
        if committed.exists():
            journal.committed = int(orjson.loads(committed.read_bytes())["row"])
        paths = sorted(journal.folder.glob(f"*{SUFFIX}"))
        for i, path in enumerate(paths):
            journal._scan(path, last=i == len(paths) - 1)
        if not paths:
            journal._create(journal.committed)
        journal._file = open(journal._segments[-1][1], "ab")   # noqa: SIM115 (closed by close())
        journal._size = journal._file.tell()
        return journal

    @property
    def first(self) -> int:
        return self._segments[0][0]

    def _scan(self, path: Path, last: bool) -> None:
        """Index the batches of one segment; cut a torn tail off the last one."""
        first = int(path.stem)
        if self._segments and first != self.rows:
            raise ValueError(f"{path}: starts at row {first:,} but the segments before end at row {self.rows:,}; "
                             "a segment is missing")
        self.rows = first
        self._segments.append((first, path))
        good, problem = 0, None
        with pa.OSFile(str(path)) as file:
            try:
                reader = pa.ipc.open_stream(file)
            except (pa.ArrowInvalid, OSError) as error:
                reader, problem = None, error
            if reader is not None and not reader.schema.equals(self.schema):
                raise ValueError(f"{path} holds live events of another schema ({reader.schema}); move "
                                 f"{self.folder} aside to start a new journal")
            good = file.tell() if reader is not None else 0
            while reader is not None:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError) as error:
                    problem = error
                    break
                stop = file.tell()
                self._index(_Entry(self.rows, batch.num_rows, path, good, stop))
                self.rows += batch.num_rows
                good = stop
        if problem is None and good == path.stat().st_size:
            return
        if not last:
            raise ValueError(f"{path}: damaged ({problem}) although a later segment follows")
        logger.warning("%s: cut off a torn tail after byte %d (%s): a write the crash interrupted, never "
                       "acknowledged", path, good, problem)
        if good < len(self._header):   # not even the schema: write the segment again
            path.unlink()
            self._segments.pop()
            self._create(first)
            return
        os.truncate(path, good)
        fsync_file(path)

    def _create(self, first: int) -> Path:
        """A new segment starting at row `first` (schema only), made durable under its final name."""
        path = self.folder / f"{first:020d}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(self._header)
        fsync_file(temporary)
        temporary.rename(path)
        fsync_dir(self.folder)
        self._segments.append((first, path))
        return path

    def append(self, table: pa.Table, kind: str = "impression", entered: float | None = None) -> int:
        """Write `table` as one batch and make it durable; returns its first row. `JournalError`: it
        could not (the journal is as before)."""
        if not table.num_rows:
            return self.rows
        body = self._encode(table, kind, entered)
        with self._lock:
            if self._broken is not None:
                raise JournalError(f"the live journal {self.folder} failed earlier ({self._broken}); restart")
            if self._file is None:
                raise JournalError(f"the live journal {self.folder} is closed")
            if self._size >= self.segment_bytes and self._size > len(self._header):   # full, not empty
                self._roll()
            start = self._size
            try:
                self._file.write(body)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as error:
                self._undo(start, error)
                raise JournalError(f"could not write live events to {self.folder}: {error}") from error
            first = self.rows
            self._size = start + len(body)
            self._index(_Entry(first, table.num_rows, self._segments[-1][1], start, self._size))
            self.rows += table.num_rows
            return first

    def _index(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self._firsts.append(entry.first)

    def _encode(self, table: pa.Table, kind: str, entered: float | None) -> bytes:
        """One record batch as IPC stream bytes (the schema message left out: the segment has it)."""
        sink = pa.BufferOutputStream()
        writer = pa.ipc.new_stream(sink, self.schema)
        batch = table.cast(self.schema).combine_chunks().to_batches()[0]
        metadata = {"kind": kind, "entered": "" if entered is None else repr(float(entered))}
        writer.write_batch(batch, custom_metadata=metadata)
        return sink.getvalue().to_pybytes()[len(self._header):]

    def _undo(self, start: int, error: OSError) -> None:
        """Cut a failed write off again; if even that fails, refuse every later append."""
        WRITE_FAILURES.labels("journal").inc()
        try:
            self._file.truncate(start)
            self._file.seek(start)
            os.fsync(self._file.fileno())
        except OSError as again:
            self._broken = f"{error}; then {again}"

    def _roll(self) -> None:
        """Close the full segment (already durable) and open a new one at the next row."""
        self._file.close()
        self._file = open(self._create(self.rows), "ab")   # noqa: SIM115 (closed by close())
        self._size = len(self._header)

    def read(self, start: int) -> Iterator[tuple[int, JournalBatch]]:
        """(first row, batch) of each batch from row `start` on (the first cut to begin there), up to
        the rows there when it is called."""
        row, stop = start, self.rows
        while row < stop:
            batch = self.batch_at(row)
            yield row, batch
            row += batch.table.num_rows

    def batch_at(self, row: int) -> JournalBatch:
        """The batch holding row `row`, from that row on; ValueError when `row` is not in the journal
        (not appended yet, or committed and deleted)."""
        with self._lock:
            if not self.first <= row < self.rows:
                raise ValueError(f"live journal row {row:,} is outside {self.first:,}..{self.rows - 1:,} "
                                 "(rows before a commit are deleted)")
            entry = self._entries[bisect.bisect_right(self._firsts, row) - 1]
        batch = self._load(entry)
        if row == entry.first:
            return batch
        return JournalBatch(batch.table.slice(row - entry.first), batch.kind, batch.entered)

    def _load(self, entry: _Entry) -> JournalBatch:
        with open(entry.segment, "rb") as file:
            file.seek(entry.start)
            body = file.read(entry.stop - entry.start)
        batch, metadata = pa.ipc.open_stream(self._header + body).read_next_batch_with_custom_metadata()
        meta = {k.decode(): v.decode() for k, v in (metadata or {}).items()}
        entered = float(meta["entered"]) if meta.get("entered") else None
        return JournalBatch(pa.Table.from_batches([batch]), meta.get("kind", "impression"), entered)

    def commit(self, row: int) -> None:
        """Note durably that a checkpoint holds the rows before `row`; delete the closed segments
        wholly before it."""
        with self._lock:
            if row <= self.committed:
                return
            self.committed = min(row, self.rows)
            temporary = self.folder / f"{COMMITTED}.tmp"
            temporary.write_bytes(orjson.dumps({"row": self.committed}))
            fsync_file(temporary)
            temporary.replace(self.folder / COMMITTED)
            dropped = 0
            while len(self._segments) > 1 and self._segments[1][0] <= self.committed:
                self._segments.pop(0)[1].unlink()
                dropped += 1
            if dropped:
                keep = bisect.bisect_left(self._firsts, self.first)
                del self._entries[:keep], self._firsts[:keep]
            fsync_dir(self.folder)

    def close(self) -> None:
        """No more appends (reading goes on)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
