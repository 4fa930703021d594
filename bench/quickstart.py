"""Quick-start benchmark: what `freshrec run` costs a newcomer on a historical file, as the CLI runs
it, in one JSON line.

The run: `freshrec run --format movielens-100k --no-serve --offline-interval off --batch-window off`
(100,000 ratings over about 2,200 event hours; the simulator's first 100,000 events where
`$FRESHREC_DATA` has no MovieLens). Beside it, in the same session:
- `simulator`: the same command on the simulator's first 100,000 events, which span under two
  event hours: the same loop with a log of a few segments, so `log_files` and the gap in
  `loop_seconds` show what partitioning the log by event hour costs a replay of old events;
- `import_floor_seconds`: a process that only imports what a run imports (torch, the engine), the
  part of `wall_seconds` no run can avoid.

Each run reports its wall time, the loop's time and stage time per row, its peak memory (the
`freshrec` process's maximum resident set), and the files its event log holds: the fastest of
`--repeats` runs by wall time, with the largest peak memory of them.

    .venv/bin/python bench/quickstart.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import data_args  # bench/ is on sys.path when run as a script

RUN = ["run", "--no-serve", "--offline-interval", "off", "--batch-window", "off", "--quiet", "--json"]
IMPORTS = "import torch, freshrec.cli.run, freshrec.engine.run, freshrec.engine.build"


def timed_run(args: list[str], state: Path) -> dict:
    """One `freshrec run` in a process of its own (under a process of this script, which reads its
    peak memory): wall time, its JSON figures, its log's files."""
    done = subprocess.run([sys.executable, __file__, "--one", str(state), *args], capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def one(state: Path, args: list[str]) -> None:
    """`--one`: run `freshrec run`, then print its figures with its peak resident set (Linux: KiB)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "freshrec.cli", *RUN, *args, "--state", str(state)],
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps({"wall_seconds": wall, "loop_seconds": figures["loop_seconds"], "events": figures["events"],
                      "auc": figures["auc"], "stage_us_per_row": figures["stage_us_per_row"],
                      "log_files": sum(1 for _ in (state / "log").rglob("*.parquet")),
                      "peak_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))


def best(args: list[str], root: Path, repeats: int) -> dict:
    """The fastest of `repeats` fresh runs by wall time, with the largest peak memory of them."""
    runs = [timed_run(args, root / f"state-{k}") for k in range(repeats)]
    return {**min(runs, key=lambda r: r["wall_seconds"]), "peak_bytes": max(r["peak_bytes"] for r in runs)}


def import_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True, timeout=600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        one(Path(options.one[0]), options.one[1:])
        return
    args = data_args(100_000)
    with tempfile.TemporaryDirectory() as root:
        floor = min(import_floor() for _ in range(options.repeats))
        simulator = best(["--format", "simulator", "--limit", "100000"], Path(root) / "simulator", options.repeats)
        quickstart = best(args, Path(root) / "quickstart", options.repeats)
    print(json.dumps({"bench": "quickstart", "stream": args[1], "load_avg": os.getloadavg()[0],
                      "cores": os.cpu_count(), "import_floor_seconds": floor, "quickstart": quickstart,
                      "simulator": simulator,
                      "loop_vs_simulator": quickstart["loop_seconds"] / simulator["loop_seconds"]}))


if __name__ == "__main__":
    main()
