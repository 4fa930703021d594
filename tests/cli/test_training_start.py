"""A training command of the `freshrec` script starts without importing torch's compiler (about a
second), and its dense optimizer's state still saves and loads: a rerun continues the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _run(state: Path, limit: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-X", "importtime", "-m", "freshrec.cli", "run", "--format", "simulator",
               "--model", "deepfm", "--limit", str(limit), "--checkpoint-events", "1000", "--no-serve",
               "--offline-interval", "off", "--state", str(state), "--quiet", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _imported(done: subprocess.CompletedProcess) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_a_run_continues_from_its_optimizers_state_without_torchs_compiler(tmp_path: Path) -> None:
    first = _run(tmp_path / "state", 2000)
    second = _run(tmp_path / "state", 4000)
    for done in (first, second):
        assert "torch" in _imported(done) and "torch._dynamo" not in _imported(done)
    figures = json.loads(second.stdout.strip().splitlines()[-1])
    assert figures["restored_from"] is not None and figures["events"] == 4000, figures
