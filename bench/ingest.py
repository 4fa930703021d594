"""Ingestion benchmark: a Criteo-format file -> validated chunks -> featurised micro-batches.

One core (the process is pinned to one CPU, one thread everywhere). Prints one JSON line with
rows/s for freshrec (micro-batches of 512, and whole chunks) and, in the same run, rows/s of
`pandas.read_csv` on the same file as the baseline, plus the load average before and after.

    .venv/bin/python bench/ingest.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from freshrec.config import cache_dir  # noqa: E402
from freshrec.engine import ingest  # noqa: E402
from freshrec.events.datasets.criteo import FIELDS, CriteoReplay  # noqa: E402
from freshrec.events.deadletter import MemoryDeadLetters  # noqa: E402
from freshrec.events.simulator import write_criteo_tsv  # noqa: E402
from freshrec.features import FeaturePipeline, default_specs  # noqa: E402


def criteo_file(rows: int, seed: int = 0) -> Path:
    """A simulated Criteo-format file of `rows` lines, made once and cached."""
    path = cache_dir() / "bench" / f"criteo_sim_{rows}_{seed}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_criteo_tsv(path.with_suffix(".tmp"), rows, seed)
        path.with_suffix(".tmp").rename(path)
    return path


def freshrec_rows_per_s(path: Path, batch_size: int) -> tuple[float, int]:
    pipeline = FeaturePipeline(default_specs(FIELDS))
    started = time.perf_counter()
    summary = ingest(CriteoReplay(path, MemoryDeadLetters()), pipeline, batch_size)
    return summary.rows / (time.perf_counter() - started), summary.batches


def pandas_rows_per_s(path: Path) -> float:
    started = time.perf_counter()
    frame = pd.read_csv(path, sep="\t", header=None)
    return len(frame) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    path = criteo_file(args.rows)
    load_before = os.getloadavg()[0]
    freshrec_rows_per_s(path, 512)  # warm-up: numba compiles/loads its cache, the file is paged in
    micro = max(freshrec_rows_per_s(path, 512)[0] for _ in range(args.repeat))
    whole = max(freshrec_rows_per_s(path, 1 << 30)[0] for _ in range(args.repeat))
    baseline = max(pandas_rows_per_s(path) for _ in range(args.repeat))
    print(json.dumps({
        "benchmark": "ingest", "rows": args.rows, "file_mb": round(path.stat().st_size / 2**20, 1),
        "freshrec_rows_per_s_batch512": round(micro), "freshrec_rows_per_s_chunk": round(whole),
        "pandas_read_csv_rows_per_s": round(baseline), "ratio_vs_pandas": round(micro / baseline, 2),
        "threads": 1, "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
