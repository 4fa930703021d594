"""Torn-read check of shared tables: a writer process steps shared rows as fast as it can (the SGD
kernel value by value, and a rewrite of every row each eighth pass) while reader processes map them
as `freshrec serve --attach` does and verify every row they gather (all its values equal at rest;
a row whose values differ was read half-way through an update). One JSON line: rows verified,
torn rows (the target is 0), the writer's passes seen, and the same check with the sequence
counters ignored (`unprotected`: the reads a table without them would have torn), load average.

    .venv/bin/python bench/torn_reads.py [--seconds 10] [--readers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile

from freshrec.testing.torn_reads import stop_writer, verify_reads, write_flat_out


def _read(root: str, name: str, seconds: float, unprotected: bool, out) -> None:
    if unprotected:   # the reader ignores the counters: what sequence locks prevent
        from freshrec.embedding import storage
        storage.RowStorage.seq_bases = lambda self: storage.NO_SEQ
    out.put(verify_reads(root, name, seconds=seconds))


def _run(seconds: float, readers: int, unprotected: bool) -> dict:
    context = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp(prefix="freshrec-torn-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    writer = context.Process(target=write_flat_out, args=(root, "torn"))
    writer.start()
    results = context.Queue()
    processes = [context.Process(target=_read, args=(root, "torn", seconds, unprotected, results))
                 for _ in range(readers)]
    for process in processes:
        process.start()
    reports = [results.get() for _ in processes]
    for process in processes:
        process.join()
    stop_writer(root, "torn")
    writer.join()
    shutil.rmtree(root, ignore_errors=True)
    return {"rows_verified": sum(r["rows_verified"] for r in reports),
            "torn_rows": sum(r["torn_rows"] for r in reports),
            "passes_seen": min(r["passes_seen"] for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    protected = _run(args.seconds, args.readers, unprotected=False)
    unprotected = _run(args.seconds, args.readers, unprotected=True)
    print(json.dumps({"bench": "torn_reads", "seconds": args.seconds, "readers": args.readers, **protected,
                      "unprotected": unprotected, "load_before": load_before, "load_after": os.getloadavg(),
                      "targets": {"torn_rows": 0}}))


if __name__ == "__main__":
    main()
