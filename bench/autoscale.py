"""What autoscaling saves: a week of a real daily load shape through `freshrec autoscale --dry-run` (the
product's policy and cost report), against a group sized for the peak all week and against an oracle
that always has exactly the workers the load needs, in the same run.

Load: the daily shape of MovieLens-100k's rating times (events per 15 minutes of the day, UTC, over its
seven months; `$FRESHREC_DATA`), scaled so the busiest slot needs `--max-gpus` workers of `--capacity`
events/s each, repeated for 7 days, one reading a minute (the offered events/s: a group that keeps up
processes what arrives). Policy: the article's bounds (`--min-gpus 1 --max-gpus 16`) on events_per_s,
HPA's defaults otherwise (tolerance 0.1, 5 min scale-down window, 30 s cool-down), A100 prices from
`devices.classes`. Figures: the cost ratio to the peak-sized group (the article's video case reports a
training cost of 65 %), to the oracle, the share of minutes the group had fewer workers than the load
needed and the share of the week's events that arrived beyond its capacity (they wait as lag: mostly
the 10 % tolerance), changes per day; and, from the device classes, what offline retraining costs on the cold class
(T4) against the hot one (A100) for the same work (hours / speed x price).

    .venv/bin/python bench/autoscale.py [--capacity 20000] [--max-gpus 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from freshrec.config import FreshrecConfig

SLOT, DAY, READING = 900, 86_400, 60   # seconds: a slot of the daily shape, a day, between readings


def daily_shape(data: Path) -> np.ndarray:
    """Events in each 15-minute slot of the day (UTC) over MovieLens-100k, the busiest slot = 1."""
    times = np.loadtxt(data / "movielens-100k" / "u.data", dtype=np.int64, usecols=3)
    counts = np.bincount((times % DAY) // SLOT, minlength=DAY // SLOT).astype(float)
    return counts / counts.max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=float, default=20_000.0, help="events/s one worker learns")
    parser.add_argument("--max-gpus", type=int, default=16)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    data = Path(os.environ.get("FRESHREC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    shape = daily_shape(data)
    t = np.arange(0, args.days * DAY, READING)
    offered = shape[(t % DAY) // SLOT] * args.max_gpus * args.capacity
    with tempfile.TemporaryDirectory() as tmp:
        trace, config = Path(tmp) / "load.csv", Path(tmp) / "a100.yaml"
        trace.write_text("t,value\n" + "".join(f"{s},{v:.1f}\n" for s, v in zip(t, offered)))
        config.write_text(yaml.safe_dump({"gpu": {"type": "A100", "count": 1, "autoscale": True},
                                          "autoscale": {"metric": "events_per_s", "threshold": args.capacity,
                                                        "interval": f"{READING}s"}}))
        done = subprocess.run([sys.executable, "-m", "freshrec.cli", "autoscale", "--config", str(config),
                               "--min-gpus", "1", "--max-gpus", str(args.max_gpus), "--dry-run", str(trace),
                               "--json"], capture_output=True, text=True, timeout=600, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    sizes = _sizes_per_reading(done.stderr, len(t))
    needed = np.maximum(1, np.ceil(offered / args.capacity))
    classes = FreshrecConfig().devices.classes   # the defaults the dry run prices with
    price = classes["A100"].cost_per_hour / 3600   # per device-second
    span = float(t[-1] - t[0])
    oracle = float((needed[:-1] * READING).sum()) * price
    cost = out["cost"]["total_cost"]
    print(json.dumps({
        "load": f"MovieLens-100k daily shape, {args.days} days, peak {args.max_gpus} x {args.capacity:,.0f} events/s",
        "peak_to_trough": round(float(shape.max() / max(shape.min(), 1e-9)), 2),
        "mean_workers": round(out["mean_workers"], 3), "oracle_mean_workers": round(float(needed[:-1].mean()), 3),
        "changes_per_day": round(out["changes"] / args.days, 1),
        "cost": cost, "peak_sized_cost": out["cost"]["peak_sized_cost"], "oracle_cost": round(oracle, 4),
        "cost_ratio_to_peak_sized": round(cost / out["cost"]["peak_sized_cost"], 4),
        "cost_ratio_to_oracle": round(cost / oracle, 4),
        "under_provisioned_minutes_share": round(float((sizes < needed).mean()), 4),
        "load_beyond_capacity_share": round(float(np.maximum(0, offered - sizes * args.capacity).sum() / offered.sum()),
                                            5),
        "article_video_case_training_cost": 0.65,
        "offline_on_cold_vs_hot_cost_ratio": round(_per_work(classes["T4"]) / _per_work(classes["A100"]), 4),
        "span_hours": span / 3600, "loadavg_1m": os.getloadavg()[0]}))


def _per_work(device) -> float:
    """What a unit of training work costs on a class: hours (1 / speed) x price per hour."""
    return device.cost_per_hour / device.speed


def _sizes_per_reading(decisions: str, readings: int) -> np.ndarray:
    """The group's size after each reading, from the dry run's lines (`t=...  CURRENT -> DESIRED  ...`)."""
    sizes = [int(line.split("->")[1].split()[0]) for line in decisions.splitlines() if line.startswith("t=")]
    if len(sizes) != readings:
        raise RuntimeError(f"the dry run printed {len(sizes)} decisions for {readings} readings")
    return np.array(sizes, dtype=float)


if __name__ == "__main__":
    main()
