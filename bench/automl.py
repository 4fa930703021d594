"""What pruning saves: the same search (`freshrec.automl.RecommenderAutoML`, TPE with the same seed,
the same number of trials, one worker) with median pruning and without, in the same run, on
MovieLens-100k ($FRESHREC_DATA; the simulator without it), over the default search space less the
deep model (so that each trial takes about a second and the search a minute or two).

Prints one JSON line: each search's wall seconds, trials complete and pruned, rows learned by all its
trials (from the trials' last reports), its best value and the best trial's AUC on the held-back last
20 % of the stream against the defaults'; the ratios of time and rows, and the load average.

    .venv/bin/python bench/automl.py [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from freshrec.automl import DEFAULT_SPACE, RecommenderAutoML, Resources, Stream
from freshrec.automl.stream import read_stream
from freshrec.config import FreshrecConfig, data_root


def search(stream: Stream, trials: int, pruning: bool, folder: Path) -> dict:
    space = {**DEFAULT_SPACE, "model.name": ["fm", "lr"]}
    automl = RecommenderAutoML(space, Resources(cpus=1), trials=trials, study=folder / f"pruning-{pruning}.db",
                               pruning=pruning, seed=0)
    started = time.perf_counter()
    result = automl.search(stream)
    seconds = time.perf_counter() - started
    rows = sum(max(t.intermediate_values) for t in result.study.get_trials() if t.intermediate_values)
    return {"seconds": round(seconds, 1), "complete": result.trials["complete"], "pruned": result.trials["pruned"],
            "rows_learned": int(rows), "best_value": round(result.best_value, 5),
            "holdout_auc": round(result.holdout["best"]["auc"], 4),
            "defaults_holdout_auc": round(result.holdout["defaults"]["auc"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    trials = parser.parse_args().trials
    on_disk = (data_root() / "movielens-100k").exists()
    stream = read_stream("movielens-100k" if on_disk else None, FreshrecConfig(source={"format": "simulator",
                                                                                 "limit": 100_000}))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        pruned = search(stream, trials, True, Path(folder))
        full = search(stream, trials, False, Path(folder))
    print(json.dumps({"bench": "automl", "data": stream.name, "rows": len(stream), "trials": trials,
                      "pruning": pruned, "no_pruning": full,
                      "time_ratio": round(pruned["seconds"] / full["seconds"], 3),
                      "rows_ratio": round(pruned["rows_learned"] / full["rows_learned"], 3),
                      "load_average": [round(x, 2) for x in (*load, *os.getloadavg())]}))


if __name__ == "__main__":
    main()
