"""The trials of a search: one Optuna study in RDB storage (a SQLite file by default), worked on by
one process or several, each trial a prequential run of one configuration that reports its running
log loss (or AUC) at stream positions, so that the pruner stops one that is behind the median of the
trials before it at the same position.

`open_study` refuses a study file that another search holds (`StudyLock`), or that was run on other
data, another space or another metric; the trials an interrupted search left running are marked
failed (no process works on them any more) and the finished ones are kept: a resumed search runs
only what is left of its trials (a trial stopped unfinished, by a crash or the timeout, does not
count as run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from freshrec.automl.objective import prequential
from freshrec.automl.space import SearchSpace
from freshrec.automl.stream import Stream
from freshrec.config import ConfigError, with_overrides

__all__ = ["OUT_OF_TIME", "SAMPLERS", "STALE", "UNFINISHED", "OutOfTime", "SearchPlan", "StudyLock", "counted",
           "open_study", "watching", "work"]

SAMPLERS = ("tpe", "random", "qmc")
"""Samplers by name: Optuna's TPE (multivariate, with a constant liar for parallel workers), random,
quasi-Monte Carlo."""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STUDY_NAME = "freshrec-automl"
STALE = "its search stopped before it finished"
"""The reason given to a trial left running by a search that died."""
OUT_OF_TIME = "the search's time ran out"
"""The reason given to a trial stopped by the search's timeout."""
UNFINISHED = (STALE, OUT_OF_TIME)
"""Reasons of failed trials that do not count as trials run (a resumed search runs them again)."""


class OutOfTime(Exception):
    """The search's time ran out in the middle of a trial (the trial is marked failed)."""


@dataclass(frozen=True)
class SearchPlan:
    """What each worker needs: the `space` (its base configuration inside), the study's `storage`
    URL, the `metric` and its trailing `window` of rows (None: every row), `sampler`, `pruning`, total
    `trials`, the `deadline` (epoch seconds, None: no timeout), the `seed`, the rows between two
    reports (`every`) and the `device` to learn on (None: the configuration's)."""

    space: SearchSpace
    storage: str
    metric: str = "logloss"
    sampler: str = "tpe"
    pruning: bool = True
    trials: int = 50
    deadline: float | None = None
    seed: int = 0
    every: int = 10_000
    device: str | None = None
    window: int | None = None

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "logloss" else "maximize"

    def load(self, worker: int = 0) -> optuna.Study:
        """The study with this worker's sampler and the pruner."""
        return optuna.load_study(study_name=STUDY_NAME, storage=_storage(self.storage),
                                 sampler=self._sampler(worker), pruner=self._pruner())

    def _sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        seed = self.seed + worker
        with warnings.catch_warnings():   # multivariate and constant_liar are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True),
                    "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                    "qmc": lambda: optuna.samplers.QMCSampler(seed=seed)}[self.sampler]()

    def _pruner(self) -> optuna.pruners.BasePruner:
        if not self.pruning:
            return optuna.pruners.NopPruner()
        # not before the second report (about a tenth of the stream): the very first rows say little
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2 * self.every)


def _storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}}
                                      if url.startswith("sqlite") else {})


class StudyLock:
    """An exclusive lock on the study file `path` for the life of a search (SQLite's own locks are
    POSIX record locks, independent of this `flock`; the kernel releases it if the search dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = None

    def __enter__(self) -> StudyLock:
        self.handle = open(self.path, "ab")   # an empty file is an empty SQLite database
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise ConfigError([f"--study {self.path}: another search is using it"]) from None
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.close()


def open_study(plan: SearchPlan, facts: dict[str, Any]) -> tuple[optuna.Study, int]:
    """Create the study, or resume it (`facts`: the data, space and metric it must have been run with);
    (study, trials already finished). Trials left running by a search that died are marked failed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(plan.storage)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction=plan.direction,
                                load_if_exists=True)
    if not study.user_attrs:
        for key, value in facts.items():
            study.set_user_attr(key, value)
    for key, value in facts.items():
        if json.dumps(study.user_attrs.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            raise ConfigError([f"--study: the study was run with another {key} ({study.user_attrs.get(key)!r}); "
                               "resume it with the same settings or start a new study file"])
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_user_attr(trial._trial_id, "reason", STALE)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return study, counted(study)


def work(plan: SearchPlan, stream: Stream | str | Path, worker: int = 0) -> None:
    """One worker: trials until the study has `plan.trials` finished ones or the deadline passes."""
    if not isinstance(stream, Stream):
        stream = Stream.load(stream)
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a failed trial keeps its reason; no traceback
    study = plan.load(worker)
    parent = os.getppid()

    def enough(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        # running trials count too, so that parallel workers do not start more than `plan.trials` in all
        if counted(study, running=True) >= plan.trials:
            study.stop()


    def objective(trial: optuna.Trial) -> float:
        return _trial(trial, plan, stream, parent if worker else None)

    timeout = None if plan.deadline is None else max(plan.deadline - time.time(), 0.0)
    if timeout == 0.0 or counted(study) >= plan.trials:
        return
    study.optimize(objective, timeout=timeout, callbacks=[enough], catch=(ConfigError, ValueError, OutOfTime),
                   gc_after_trial=False)


@contextlib.contextmanager
def watching(plan: SearchPlan, progress: Callable[[optuna.trial.FrozenTrial], None] | None) -> Iterator[None]:
    """While inside, a thread reads the study every second and calls `progress` with each trial that
    finished since it began (nothing without `progress`)."""
    if progress is None:
        yield
        return
    done = threading.Event()
    study = plan.load()
    seen = {trial.number for trial in study.get_trials(deepcopy=False, states=FINISHED)}

    def watch() -> None:
        while True:
            stopped = done.wait(1.0)
            for trial in study.get_trials(states=FINISHED):
                if trial.number not in seen:
                    seen.add(trial.number)
                    progress(trial)
            if stopped:   # after a last reading
                return

    thread = threading.Thread(target=watch, name="automl-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def counted(study: optuna.Study, running: bool = False) -> int:
    """The study's trials that count towards a search's number: finished ones (not those stopped
    unfinished: `UNFINISHED`), and, with `running`, those in progress."""
    states = (*FINISHED, TrialState.RUNNING) if running else FINISHED
    return sum(t.user_attrs.get("reason") not in UNFINISHED for t in study.get_trials(deepcopy=False, states=states))


def _trial(trial: optuna.Trial, plan: SearchPlan, stream: Stream, parent: int | None) -> float:
    """One configuration, scored prequentially; its figures kept as the trial's user attributes."""
    params = plan.space.suggest(trial)
    overrides = plan.space.overrides(params)
    if plan.device is not None:
        overrides["gpu.device"] = plan.device
    trial.set_user_attr("overrides", overrides)
    started = time.perf_counter()

    def report(rows: int, value: float) -> None:
        if parent is not None and os.getppid() != parent:   # the search that started this worker died
            os._exit(1)
        trial.report(value, rows)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        if plan.deadline is not None and time.time() > plan.deadline:
            trial.set_user_attr("reason", OUT_OF_TIME)
            raise OutOfTime()
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        scored = prequential(with_overrides(plan.space.base, overrides), stream, report, plan.every, plan.metric,
                             plan.window)
    except (ConfigError, ValueError) as error:   # a combination the model refuses: the trial fails, with why
        trial.set_user_attr("reason", str(error))
        raise
    trial.set_user_attr("seconds", time.perf_counter() - started)
    trial.set_user_attr("auc", scored.auc())
    trial.set_user_attr("logloss", scored.logloss())
    trial.set_user_attr("cpu_seconds", scored.cpu_seconds)
    return scored.trailing(plan.metric, plan.window)
