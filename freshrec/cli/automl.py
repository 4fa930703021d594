"""`freshrec automl`: search a model's configuration on a stream (Optuna, prequential trials,
pruning, parallel workers, a resumable study file), write the best as a YAML file that `freshrec run
--config` takes, and, with `--report`, an HTML page of the search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import SOURCE, build_config, overriding

__all__ = ["automl_command"]


@guarded
@overriding(SOURCE)
def automl_command(
    config: Annotated[Path | None, typer.Option(help="YAML configuration the trials start from (see `freshrec "
                                                     "config show`).")] = None,
    space: Annotated[Path | None, typer.Option(help="YAML search space: key: [choices] or {low, high, log, step} "
                                                    "(default: freshrec.automl.DEFAULT_SPACE).")] = None,
    trials: Annotated[int, typer.Option(help="Trials in all (a resumed study counts those it has).")] = 50,
    timeout: Annotated[str | None, typer.Option(help="Stop starting trials after this long (e.g. 30m); a trial "
                                                     "running then is stopped at its next report.")] = None,
    study: Annotated[Path, typer.Option(help="The study's SQLite file: a search that finds one resumes it.")]
    = Path("freshrec-automl.db"),
    out: Annotated[Path, typer.Option(help="Write the best configuration here (YAML for `run --config`).")]
    = Path("best.yaml"),
    report: Annotated[Path | None, typer.Option(help="Write index.html (history, importances, best vs "
                                                     "defaults) and figures.json here.")] = None,
    workers: Annotated[int | None, typer.Option(help="Trials at once, one process each (default: the CPU "
                                                     "cores; with GPUs, one per GPU).")] = None,
    sampler: Annotated[str, typer.Option(help="tpe, random or qmc.")] = "tpe",
    pruning: Annotated[bool, typer.Option("--pruning/--no-pruning", help="Stop trials behind the median.")] = True,
    metric: Annotated[str, typer.Option(help="logloss (minimised) or auc (maximised), prequential.")] = "logloss",
    holdout: Annotated[float, typer.Option(help="The stream's last share, kept for the final comparison.")] = 0.2,
    window: Annotated[int | None, typer.Option(help="Rows of the trailing window the metric is taken over "
                                                    "(default: as many as the held-back part; 0: all).")] = None,
    seed: Annotated[int, typer.Option(help="The sampler's seed.")] = 0,
    dead_letters: Annotated[Path, typer.Option(help="JSONL file for rejected records.")]
    = Path("dead_letters.jsonl"),
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per finished trial.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Search a model's configuration on a stream, prequentially; write the best as YAML."""
    from freshrec.automl import RecommenderAutoML, Resources, auto_gpu_pool
    from freshrec.cli.output import emit, note
    from freshrec.events.deadletter import JsonlDeadLetters

    settings = build_config(config, overrides or {})
    automl = RecommenderAutoML(_space(space), Resources(workers, () if workers else auto_gpu_pool()),
                               config=settings, trials=trials, timeout=timeout, study=study, sampler=sampler,
                               pruning=pruning, metric=metric, holdout=holdout, window=window, seed=seed)
    with JsonlDeadLetters(dead_letters) as letters:
        result = automl.search(dead_letters=letters, progress=None if quiet else _say)
    h = result.holdout
    header = (f"# freshrec automl: trial {result.trials['best_number']} of {result.trials['finished']} "
              f"(study {study}); prequential AUC on the held-back last {h['rows']:,} events: "
              f"{_auc(h['best'])} (defaults {_auc(h['defaults'])})\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.config_yaml(header))
    figures = {**result.figures(), "config": str(out), "report": None, "dead_letters": letters.total,
               "dead_letter_file": str(dead_letters) if letters.total else None}
    if report is not None:
        from freshrec.automl import write_report

        figures["report"] = str(write_report(result, report, title=f"freshrec automl: {settings.source.format}"))
    if not as_json:
        note(f"best configuration written to {out}: freshrec run --config {out}")
        figures = {"best_value": result.best_value, **{f"trials.{k}": v for k, v in result.trials.items()},
                   "holdout_auc.best": h["best"]["auc"], "holdout_auc.defaults": h["defaults"]["auc"],
                   **{f"best.{k}": v for k, v in result.best_params.items()}, "report": figures["report"],
                   "dead_letters": letters.total}
    emit(figures, as_json, "automl")


def _say(trial) -> None:
    """One line on stderr for a finished trial: its state, value (or why it failed) and parameters."""
    from freshrec.cli.output import note

    value = trial.value if trial.value is not None else trial.user_attrs.get("reason", "")
    note(f"trial {trial.number} {trial.state.name.lower()}: {value} {trial.params}")


def _auc(figures: dict) -> str:
    return "-" if figures["auc"] is None else f"{figures['auc']:.4f}"


def _space(path: Path | None) -> dict | None:
    """The search space in the YAML file `path` (None: the default space)."""
    import yaml

    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"--space {path}: {getattr(error, 'strerror', None) or error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--space {path}: expected a mapping of parameters to choices or ranges")
    return data
