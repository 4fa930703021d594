"""The torn-read check of shared tables: one process steps shared rows as fast as it can while
readers in others gather them and verify every row they get.

The writer (`write_flat_out`) keeps `rows` rows of `dim` values in a share, all values of a row
equal at rest: it steps every row by +1 per pass with the SGD kernel (`RowOptimizer.step_at`, value by
value, as training does) and every eighth pass rewrites them all with `RowStorage.scatter`. A reader
(`verify_reads`) maps the rows as a server does and checks each row it gathers: a row whose
values differ was torn (read half-way through an update). It also counts the passes it saw go by,
so a run where the writer stood still proves nothing and says so.

>>> import multiprocessing, tempfile
>>> root = tempfile.mkdtemp()
>>> writer = multiprocessing.get_context("spawn").Process(target=write_flat_out, args=(root, "torn-demo"))
>>> writer.start()
>>> report = verify_reads(root, "torn-demo", min_passes=20)
>>> stop_writer(root, "torn-demo"); writer.join()
>>> report["torn_rows"], report["passes_seen"] >= 20
(0, True)
"""

from __future__ import annotations

import time

import numpy as np

from freshrec.embedding.optimizers import SGD
from freshrec.embedding.storage import RowStorage
from freshrec.share.area import SharedArea
from freshrec.share.reader import MappedTable

__all__ = ["stop_writer", "verify_reads", "write_flat_out"]

_STOP = "stop"


def write_flat_out(root: str, name: str, rows: int = 4096, dim: int = 32, chunk_rows: int = 1024) -> None:
    """Step `rows` shared rows as fast as possible until `stop_writer` (run in its own process)."""
    area = SharedArea(name, root=root)
    area.take()
    storage = RowStorage(dim, chunk_rows=chunk_rows, initializer="zeros")
    storage.share(area.chunk_allocator("."))
    at = storage.allocate(rows)
    area.write_manifest({"rows": rows, "dim": dim, "chunk_rows": chunk_rows, "chunks": storage.chunks})
    sgd, grads = SGD(lr=1.0).build(), -np.ones((rows, dim), np.float32)
    passes, stop = 0, area.path / _STOP
    while not stop.exists():
        sgd.step_at(storage.addresses(), chunk_rows, at, grads)
        passes += 1
        if passes % 8 == 0:
            storage.scatter(at, np.full((rows, dim), passes, np.float32))
    area.release()


def stop_writer(root: str, name: str) -> None:
    (SharedArea(name, root=root).path / _STOP).touch()


def verify_reads(root: str, name: str, min_passes: int = 0, seconds: float = 0.0, give_up: float = 300.0) -> dict:
    """Gather all the writer's rows again and again, until it has made `min_passes` passes and
    `seconds` have gone by (TimeoutError when the passes have not come `give_up` s later); the rows
    verified, the torn ones, the passes seen."""
    area = SharedArea(name, root=root)
    while (manifest := area.read_manifest()) is None:
        time.sleep(0.01)
    rows, dim, chunk_rows = manifest["rows"], manifest["dim"], manifest["chunk_rows"]
    mapped = MappedTable(area, ".", dim, chunk_rows)
    mapped.follow({"chunks": manifest["chunks"], "index": None})
    at = np.arange(rows)
    verified = torn = 0
    first = last = None
    started = time.monotonic()
    while last is None or last - first < min_passes or time.monotonic() < started + seconds:
        if time.monotonic() > started + seconds + give_up:
            raise TimeoutError(f"the writer made {last - first} passes in {give_up} s, not {min_passes}")
        values = mapped.storage.gather(at).numpy()
        torn += int((values.min(1) != values.max(1)).sum())
        verified += rows
        first = values[0, 0] if first is None else first
        last = values[0, 0]
    return {"rows_verified": verified, "torn_rows": torn, "passes_seen": float(last - first)}
