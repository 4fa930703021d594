"""`freshrec automl` as a user runs it: the README's commands (the search, then `freshrec run --config`
on what it wrote); a search killed with SIGKILL resumes from its study file without repeating a
finished trial (its worker processes end by themselves when their search is gone); a bad search space
is refused with one line naming the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import need_real_data, readme_block_commands, wait_until
from optuna.trial import TrialState

from freshrec.automl.trials import STALE, STUDY_NAME

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # CLI processes (searches, a killed one), waited on
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
ROOT = Path(__file__).resolve().parents[2]
README = "AutoML: `freshrec automl`"


def trials(study: Path, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{study}").get_trials(states=states)
    except KeyError:   # not created yet
        return []


def alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def test_the_readme_search_writes_a_configuration_that_run_takes(tmp_path):
    need_real_data("movielens-100k")
    search, run = readme_block_commands(README)[:2]
    search = [str(ROOT / arg) if arg.startswith("docs/") else arg for arg in search]   # from the repository
    search = [*search, "--limit", "10000", "--trials", "2"]   # the README's search, two trials of a shorter stream
    found = subprocess.run([*FRESHREC, *search], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert found.returncode == 0, found.stderr
    figures = json.loads(found.stdout.splitlines()[-1])
    assert figures["trials"]["finished"] == 2 and figures["holdout"]["rows"] == 2000
    best = tmp_path / figures["config"]
    assert best.read_text().startswith("# freshrec automl: trial ")
    assert (tmp_path / figures["report"]).is_file()
    ran = subprocess.run([*FRESHREC, *run, "--limit", "3000"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["learned"] == 3000


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.dim: [4, 8, 16]\nmodel.lr: {low: 0.01, high: 0.5, log: true}\nfusion.strategy: [none]\n")
    study = tmp_path / "study.db"
    command = [*FRESHREC, "automl", "--format", "simulator", "--limit", "6000", "--space", str(space),
               "--trials", "30", "--workers", "2", "--study", str(study), "--out", "best.yaml", "--json", "--quiet"]
    search = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)})   # its scratch outlives SIGKILL
    try:
        wait_until(lambda: len(trials(study, TrialState.COMPLETE)) >= 3, "three complete trials", search)
        search.kill()   # SIGKILL: the search alone; its workers notice it is gone
        search.wait(timeout=60)
        wait_until(lambda: not alive(search.pid), "the worker processes ending by themselves", timeout=120)
    finally:
        if alive(search.pid):
            os.killpg(search.pid, signal.SIGKILL)
    finished = {t.number: (t.params, t.value, t.datetime_complete)
                for t in trials(study, TrialState.COMPLETE, TrialState.PRUNED)}
    assert 3 <= len(finished) < 30
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    figures = json.loads(resumed.stdout.splitlines()[-1])
    stale = [t for t in trials(study, TrialState.FAIL) if t.user_attrs.get("reason") == STALE]
    assert figures["trials"]["finished"] in (30, 31)   # the second worker may start one as the first ends the last
    assert figures["trials"]["this_search"] == figures["trials"]["finished"] - len(finished)
    after = {t.number: (t.params, t.value, t.datetime_complete)
             for t in trials(study, TrialState.COMPLETE, TrialState.PRUNED)}
    assert {n: after[n] for n in finished} == finished   # kept, not run again
    assert len(after) + len(stale) == len(trials(study, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    assert (tmp_path / "best.yaml").is_file()


@pytest.mark.parametrize("space, line", [
    ("embed_dim: []\n", "error: search_space.embed_dim: an empty list of choices"),
    ("model.depth: [1, 2]\n", "error: search_space.model.depth: not a parameter freshrec tunes"),
    ("model.lr: {low: 0.5, high: 0.1}\n", "error: search_space.model.lr: low 0.5 is above high 0.1"),
])
def test_a_bad_space_is_refused_in_one_line(tmp_path, space, line):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    refused = subprocess.run([*FRESHREC, "automl", "--format", "simulator", "--space", str(path)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith(line) and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "freshrec-automl.db").exists()   # refused before any study was made
