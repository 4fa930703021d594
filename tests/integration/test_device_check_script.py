"""`bench/device_check.sh run`, the one prepared script for a lent GPU machine, runs every stage it
names on a machine without a GPU too: the CUDA tests skip, each device check says it measured
nothing, and every result file lands in $OUT. (Its `prepare` downloads wheels: not run here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "device_check.sh"


def test_every_stage_runs_and_reports_where_there_is_no_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(SCRIPT), "run"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"tests.log", "nvml.json", "topo.txt", "distributed.json"}
    log = (out / "tests.log").read_text()
    assert " skipped" in log and "failed" not in log and "error" not in log.lower(), log[-3000:]
    assert "SKIPPED [1] tests/gpu/test_cuda.py" in log and "needs a CUDA device" in log
    assert json.loads(done.stdout.strip().splitlines()[-2]) == {"gpu": None,
                                                               "note": "no CUDA device here: nothing measured"}
    assert json.loads((out / "distributed.json").read_text())["note"] == "no CUDA device here: nothing measured"


def test_it_names_its_two_commands() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: bench/device_check.sh prepare [PYTHON_VERSION] | run" in done.stderr
