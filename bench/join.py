"""Joiner benchmark: input events/s of `Joiner.process` (what `freshrec run --join-window` runs per
chunk) on a simulated impression/click stream, and what it holds.

Stream (`freshrec.join.simulated.impression_stream`): `--impressions` impressions at 1,000/s of
event time, 10% clicked after a mean 20 s delay, 5% of clicks doubled, 1% of impressions
re-delivered, orphan clicks, up to 4 s of disorder and 1% of rows 100 s late. Join: window 300 s,
lateness 10 s, by `impression_id` and by (`user_id`, `item_id`). Chunks of `--chunk` rows, as the
engine hands them over (Arrow tables in, chunks of examples out); best of `--repeats` runs.

Baseline in the same run: the same rules written plainly in Python, one object per impression
(`tests/join/reference.py`, the joiner before its numba kernel) on the first `--baseline-rows`
rows, fed plain tuples (no Arrow work at all).

`events_per_s` is over the whole stream, from an empty joiner (its arrays grow to hold the first
window: fresh memory, slow on some VMs); `steady_events_per_s` over the second half of the chunks,
when the held state has stopped growing.

Memory: the largest number of impressions held and stored rows, and the joiner's own bytes at that
point (kernel arrays + the Arrow rows awaiting their label).

Prints one JSON line.

    .venv/bin/python bench/join.py [--impressions 1000000] [--chunk 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from freshrec.events.deadletter import CountingDeadLetters
from freshrec.join import JoinConfig, Joiner
from freshrec.join.simulated import impression_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "join"))
from reference import ReferenceJoiner  # noqa: E402  (the baseline lives with the tests that use it)

WINDOW, LATENESS = 300.0, 10.0


class _Count(CountingDeadLetters):
    def _store(self, letter) -> None:   # counted by reason, not kept
        pass


def run(events, config: JoinConfig, chunk: int) -> dict:
    joiner = Joiner(config, letters := _Count())
    pieces = [events.slice(i, i + chunk) for i in range(0, len(events), chunk)]
    peak = {"impressions": 0, "rows": 0, "bytes": 0}
    emitted, half = 0, len(pieces) // 2
    started = time.perf_counter()
    for n, piece in enumerate(pieces):
        if n == half:
            second_half = time.perf_counter()
        out = joiner.process(piece)
        emitted += len(out) if out is not None else 0
        if joiner.memory["impressions"] > peak["impressions"]:
            peak = {**{k: joiner.memory[k] for k in ("impressions", "rows")}, "bytes": joiner.nbytes}
    steady = (sum(len(p) for p in pieces[half:])) / (time.perf_counter() - second_half)
    out = joiner.flush()
    seconds = time.perf_counter() - started
    emitted += len(out) if out is not None else 0
    s = joiner.stats
    assert emitted == s.positives + s.negatives
    return {"events_per_s": len(events) / seconds, "steady_events_per_s": steady, "examples": emitted,
            "positives": s.positives, "late": s.late_impressions + s.late_actions, "orphans": s.orphan_actions,
            "dead_letters": letters.total, "peak": peak}


def reference_rate(events, config: JoinConfig, rows: int) -> float:
    table = events.table.slice(0, rows).to_pydict()
    codes = {"impression": 0, "click": 1}
    stream = [(codes[k], ts, key, k, i) for i, (k, ts, key) in
              enumerate(zip(table["kind"], table["ts"], table["impression_id"], strict=True))]
    joiner = ReferenceJoiner(config)
    started = time.perf_counter()
    joiner.process(stream)
    joiner.advance(float("inf"))
    return len(stream) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-rows", type=int, default=200_000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    events = impression_stream(args.impressions, seed=0, rate=1000.0, ctr=0.1, late=0.01)
    figures: dict = {"events": len(events), "chunk": args.chunk,
                     "clicks": int(np.sum(np.asarray(events.table.column("kind")) == "click"))}
    by_id = JoinConfig(window=WINDOW, allowed_lateness=LATENESS, key="impression_id")
    by_pair = JoinConfig(window=WINDOW, allowed_lateness=LATENESS, key=("user_id", "item_id"))
    run(events.slice(0, 2 * args.chunk), by_id, args.chunk)   # compile (or load) the kernel
    for name, config in (("by_impression_id", by_id), ("by_user_item", by_pair)):
        runs = [run(events, config, args.chunk) for _ in range(args.repeats)]
        figures[name] = max(runs, key=lambda r: r["events_per_s"])
    figures["reference_events_per_s"] = reference_rate(events, by_id, args.baseline_rows)
    figures["vs_reference"] = figures["by_impression_id"]["events_per_s"] / figures["reference_events_per_s"]
    figures.update({"load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
