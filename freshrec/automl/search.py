"""`RecommenderAutoML`: a hyper-parameter search on Optuna, every trial judged prequentially (each
micro-batch scored before it is learned, in time order, never a shuffled split) on the first part of
the stream; the last part (`holdout`, 20 %) is kept for the final comparison of the best trial with
the defaults, each learning the whole stream and scored on that part alone.

The article's call works as written:

>>> import tempfile
>>> from pathlib import Path
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> automl = RecommenderAutoML(search_space={"embed_dim": [4, 8], "learning_rate": [0.05, 0.2]},
...                            gpu_resources=auto_gpu_pool(), trials=3, resources=Resources(cpus=1),
...                            study=Path(tempfile.mkdtemp()) / "study.db")
>>> result = automl.search(Simulator(SimulatorConfig(total_events=3000, batch_size=1000)))
>>> sorted(result.best_params), result.trials["finished"], type(result.best_model).__name__
(['embed_dim', 'learning_rate'], 3, 'OnlineFM')
>>> result.best_config.model.dim in (4, 8), sorted(result.holdout)
(True, ['best', 'defaults', 'rows'])
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from freshrec.automl.objective import METRICS, Scored, prequential
from freshrec.automl.space import SearchSpace
from freshrec.automl.stream import Stream, read_stream
from freshrec.automl.trials import SAMPLERS, SearchPlan, StudyLock, counted, open_study, watching, work
from freshrec.config import ConfigError, FreshrecConfig, parse_duration, with_overrides
from freshrec.devices.inventory import Device, machine_devices
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.source import Source
from freshrec.models.base import OnlineModel

__all__ = ["RecommenderAutoML", "Resources", "SearchResult", "auto_gpu_pool"]

STUDY = Path("freshrec-automl.db")
"""The study file when none is named."""


@dataclass(frozen=True)
class Resources:
    """What trials may run on at once: `cpus` worker processes (None: every core), or one worker per
    GPU of `gpus` (indices), each learning on its GPU."""

    cpus: int | None = None
    gpus: tuple[int, ...] = ()

    def workers(self, trials: int) -> list[str | None]:
        """The device of each worker (None: the configuration's), at most `trials` of them."""
        if self.gpus:
            return [f"cuda:{index}" for index in self.gpus][:trials]
        return [None] * max(1, min(self.cpus or os.cpu_count() or 1, trials))


def auto_gpu_pool() -> tuple[int, ...]:
    """The indices of this machine's GPUs (NVML), empty without one: the article's `gpu_resources`."""
    try:
        devices, _ = machine_devices()
    except Exception:  # noqa: BLE001 - no NVML, no driver: no GPU to use
        return ()
    return tuple(device.index for device in devices if device.kind == "gpu")


@dataclass
class SearchResult:
    """The best trial (`best_params`, its `best_config` and `best_value`), the `best_model` trained on
    the whole stream with it, the held-back comparison (`holdout`: rows, best and defaults' AUC and
    log loss), the trials' counts and the `study`."""

    best_params: dict[str, Any]
    best_config: FreshrecConfig
    best_value: float
    best_model: OnlineModel | None
    holdout: dict[str, Any]
    trials: dict[str, Any]
    study: optuna.Study = field(repr=False)
    overrides: dict[str, Any] = field(default_factory=dict)
    scored: dict[str, Scored] = field(default_factory=dict, repr=False)

    def figures(self) -> dict[str, Any]:
        """What a run prints with `--json`."""
        return {"best_params": self.best_params, "best_value": self.best_value, "trials": self.trials,
                "holdout": self.holdout, "overrides": self.overrides}

    def config_yaml(self, header: str = "") -> str:
        """The best configuration as YAML for `freshrec run --config` (the keys that differ from the
        defaults)."""
        settings = self.best_config.model_dump(mode="json", exclude_defaults=True)
        return header + yaml.safe_dump(settings, sort_keys=False)


class RecommenderAutoML:
    """A search over `search_space` (see `freshrec.automl.space`; None: `DEFAULT_SPACE`) from the
    base configuration `config` (None: the defaults): `trials` in all, stopped after `timeout`
    (seconds or a duration like "30m"), in the Optuna study stored in the SQLite file `study` (a
    search that finds it resumes it), with the sampler `sampler` (tpe, random, qmc), median pruning
    on the prequential `metric` (logloss or auc) over the trailing `window` of rows (None: as many as
    the held-back part; 0: every row) reported every `every` rows (None: 20 reports a trial) unless
    `pruning` is off, trials in parallel on `resources` (or the GPUs of `gpu_resources`), the last
    `holdout` of the stream kept for the final comparison. The space is checked at once."""

    def __init__(self, search_space: Mapping[str, Any] | None = None, resources: Resources | int | None = None,
                 gpu_resources: Sequence[int | Device] | None = None, *, config: FreshrecConfig | None = None,
                 trials: int = 50, timeout: float | str | None = None, study: str | Path | None = None,
                 sampler: str = "tpe", pruning: bool = True, metric: str = "logloss", holdout: float = 0.2,
                 every: int | None = None, window: int | None = None, seed: int = 0) -> None:
        self.space = SearchSpace(search_space, config)
        gpus = tuple(g.index if isinstance(g, Device) else int(g) for g in gpu_resources or ())
        cpus = resources.cpus if isinstance(resources, Resources) else resources
        self.resources = Resources(cpus, gpus or (resources.gpus if isinstance(resources, Resources) else ()))
        self.trials, self.study_path = trials, Path(study) if study is not None else STUDY
        self.timeout = parse_duration(timeout) if isinstance(timeout, str) else timeout
        self.sampler, self.pruning, self.metric, self.holdout = sampler, pruning, metric, holdout
        self.every, self.window, self.seed = every, window, seed
        checks = [(trials >= 1, f"trials: expected a number >= 1, got {trials}"),
                  (sampler in SAMPLERS, f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}"),
                  (metric in METRICS, f"metric: expected one of {', '.join(METRICS)}, got {metric!r}"),
                  (0 < holdout < 1, f"holdout: expected a fraction in (0, 1), got {holdout}"),
                  (window is None or window >= 0, f"window: expected a number of rows >= 0, got {window}"),
                  (self.space.base.model.loss == "bce", "model.loss: a search judges click models (bce), not "
                                                        f"{self.space.base.model.loss}")]
        if problems := [line for good, line in checks if not good]:
            raise ConfigError(problems[:1])

    def search(self, data: Stream | Source | FreshrecConfig | str | Path | None = None,
               dead_letters: DeadLetterSink | None = None,
               progress: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> SearchResult:
        """Search on `data` (a stream, a source, a configuration whose source to read, a data set's
        format name or a file; None: the base configuration's source; records it rejects go to
        `dead_letters`), calling `progress` with each trial as it finishes; the result."""
        base = self.space.base
        stream = data if isinstance(data, Stream) else read_stream(data, base, dead_letters)
        searched = stream.head(1 - self.holdout)
        every = self.every or max(len(searched) // 20, 1)
        window = len(stream) - len(searched) if self.window is None else self.window or None
        deadline = None if self.timeout is None else time.time() + self.timeout
        started = time.perf_counter()
        self.study_path.parent.mkdir(parents=True, exist_ok=True)
        with StudyLock(self.study_path), tempfile.TemporaryDirectory(prefix="freshrec-automl-") as scratch:
            devices = self.resources.workers(self.trials)
            plan = SearchPlan(self.space, f"sqlite:///{self.study_path.resolve()}", self.metric, self.sampler,
                              self.pruning, self.trials, deadline, self.seed, every, window=window)
            study, before = open_study(plan, self._facts(stream))
            with watching(plan, progress):
                if len(devices) == 1:
                    work(_on(plan, devices[0]), searched)
                else:
                    path = Path(scratch) / "stream.arrow"
                    searched.save(path)
                    _in_processes([_on(plan, device) for device in devices], path)
        seconds = time.perf_counter() - started
        return self._result(study, stream, before, seconds)

    def _facts(self, stream: Stream) -> dict[str, Any]:
        ts = stream.table.column("ts")
        data = {"name": stream.name, "rows": len(stream), "first_ts": ts[0].as_py(), "last_ts": ts[-1].as_py()}
        return {"data": data, "space": self.space.space, "metric": self.metric, "holdout": self.holdout,
                "window": self.window,
                "base": self.space.base.model_dump(mode="json", exclude_defaults=True)}

    def _result(self, study: optuna.Study, stream: Stream, before: int, seconds: float) -> SearchResult:
        trials = study.get_trials(deepcopy=False)
        counts = {state.name.lower(): sum(t.state == state for t in trials)
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"no trial of the study finished ({counts}); see {self.study_path}")
        best = study.best_trial
        overrides = self.space.overrides(best.params)
        best_config = with_overrides(self.space.base, overrides)
        start = len(stream.head(1 - self.holdout))   # where the held-back part begins
        scored = {"best": prequential(best_config, stream), "defaults": prequential(self.space.base, stream)}
        holdout = {"rows": len(stream) - start,
                   **{name: {"auc": s.auc(start), "logloss": s.logloss(start)} for name, s in scored.items()}}
        summary = {**counts, "finished": counted(study), "this_search": counted(study) - before,
                   "seconds": seconds, "trial_seconds": sum(t.user_attrs.get("seconds", 0.0) for t in trials),
                   "best_number": best.number, "study": str(self.study_path)}
        return SearchResult(self.space.decode(best.params), best_config, float(best.value), scored["best"].model,
                            holdout, summary, study, overrides, scored)


def _on(plan: SearchPlan, device: str | None) -> SearchPlan:
    return plan if device is None else dataclasses.replace(plan, device=device)


def _in_processes(plans: list[SearchPlan], stream: Path) -> None:
    """One spawned worker process per plan; waits for them all (`RuntimeError` if one failed)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(plan, str(stream), i, len(plans)), daemon=True)
                 for i, plan in enumerate(plans)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    if failed := [p.exitcode for p in processes if p.exitcode]:
        raise RuntimeError(f"{len(failed)} of the search's worker processes failed (exit codes {failed})")


def _worker(plan: SearchPlan, stream: str, index: int, workers: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    work(plan, stream, index)
