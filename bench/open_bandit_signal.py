"""What the Open Bandit logs hold for an online learner: prequential AUC of freshrec with its
defaults and of Vowpal Wabbit (its defaults, squared loss, and `--loss_function logistic`) on each
log as it was logged and on copies whose clicks are permuted across the rows (the same rows,
features, order and number of clicks, but no signal), beside a score that learns nothing but the
click rate of each slot over its last ~100 impressions (an exponential moving average, weight 0.01).

A learner that finds the logs' signal scores above its permuted copies; a log's 38-69 clicks give
one AUC a standard error of about 0.04, so the means over the six logs (two policies x three
campaigns) and over `--copies` permutations of each are what to read. `bench/versus_vw.py` compares
the same learners on every stream; this one says why Open Bandit ranks them as it does.

Prints one JSON line: per log and on average, `as_logged` and `permuted` (mean over the copies)
AUCs of `freshrec`, `vw_defaults`, `vw_logistic` and `slot_rate`, with the load average.

    .venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/open_bandit_signal.py [--copies 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import versus_vw  # bench/ is on sys.path when run as a script
from quality import data_folder

from freshrec.metrics import auc

SLOT_RATE_WEIGHT = 0.01   # the moving average's weight: about the slot's last 100 impressions
LOGS = [(policy, campaign) for policy in ("bts", "random") for campaign in ("all", "men", "women")]
LEARNERS = ("freshrec", "vw_defaults", "vw_logistic", "slot_rate")


def slot_rate(positions: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """Each impression's score: its slot's moving click rate before it (prequential)."""
    rate, scores = {}, np.empty(len(clicks))
    for i, (slot, click) in enumerate(zip(positions.tolist(), clicks.tolist())):
        before = rate.get(slot, 0.0)
        scores[i] = before
        rate[slot] = before + SLOT_RATE_WEIGHT * (click - before)
    return scores


def learners(stream: str, log: pd.DataFrame) -> dict[str, float]:
    """Every learner's prequential AUC on `stream` (registered in `versus_vw.STREAMS`), whose log
    (position and click columns) is `log`."""
    lines, labels = versus_vw.vw_lines(stream)
    return {"freshrec": versus_vw.freshrec_defaults(stream)["auc"],
            "vw_defaults": versus_vw.vw_prequential(lines, labels, "")["auc"],
            "vw_logistic": versus_vw.vw_prequential(lines, labels, "--loss_function logistic")["auc"],
            "slot_rate": round(auc(slot_rate(log["position"].to_numpy(), log["click"].to_numpy()),
                                   log["click"].to_numpy(np.float64)), 4)}


def permuted_copy(log: pd.DataFrame, source: Path, folder: Path, rng: np.random.Generator) -> pd.DataFrame:
    """`log` with its clicks permuted, written as a campaign folder `folder` (with `source`'s item
    context) that the Open Bandit reader takes."""
    folder.mkdir(parents=True)
    shutil.copy(source / "item_context.csv", folder / "item_context.csv")
    copy = log.assign(click=rng.permutation(log["click"].to_numpy()))
    copy.to_csv(folder / f"{folder.name}.csv")
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="label permutations of each log")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, load_before, report = np.random.default_rng(args.seed), os.getloadavg()[0], {}
    with tempfile.TemporaryDirectory() as scratch:
        for policy, campaign in LOGS:
            source = data_folder() / versus_vw.OPEN_BANDIT / policy / campaign
            log = pd.read_csv(source / f"{campaign}.csv.gz", index_col=0)
            stream = f"open-bandit-{policy}-{campaign}"
            row = {"clicks": int(log["click"].sum()), "as_logged": learners(stream, log)}
            copies = []
            for k in range(args.copies):
                folder = Path(scratch) / f"{policy}-{k}" / campaign
                copy = permuted_copy(log, source, folder, rng)
                versus_vw.STREAMS[f"{stream}-permuted-{k}"] = ("open-bandit", str(folder))
                copies.append(learners(f"{stream}-permuted-{k}", copy))
            row["permuted"] = {name: round(float(np.mean([c[name] for c in copies])), 4) for name in LEARNERS}
            report[stream] = row
            print(stream, json.dumps(row), file=sys.stderr)
    mean = {kind: {name: round(float(np.mean([row[kind][name] for row in report.values()])), 4)
                   for name in LEARNERS} for kind in ("as_logged", "permuted")}
    print(json.dumps({"bench": "open_bandit_signal", "copies": args.copies, "logs": report, "mean": mean,
                      "load_avg": [load_before, os.getloadavg()[0]]}))


if __name__ == "__main__":
    main()
