"""The AutoML report: one self-contained HTML page (plots as embedded PNG images) with the search's
history, each trial's reported values along the stream (pruned ones stopped early), the parameters'
importances (Optuna's fANOVA), the best trial against the defaults on the held-back end of the
stream, and a table of the best trials; its figures as JSON beside it."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the Agg backend
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from freshrec.automl.search import SearchResult  # noqa: E402
from freshrec.evaluate.report import png_base64, write_page  # noqa: E402
from freshrec.evaluate.windows import over_windows, window_bounds  # noqa: E402

__all__ = ["write_report"]

COLOURS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "fail": "#d62728", "best": "#2ca02c", "defaults": "#7f7f7f"}


def _history(study: optuna.Study) -> str:
    """Each finished trial's value by trial number (pruned ones at their last report), the best so far."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    better = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best, line = None, []
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        trials = [t for t in study.get_trials(deepcopy=False, states=(state,)) if _last(t) is not None]
        axes.scatter([t.number for t in trials], [_last(t) for t in trials], marker=marker,
                     color=COLOURS[state.name.lower()], label=state.name.lower())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = trial.value if best is None else better(best, trial.value)
        line.append((trial.number, best))
    if line:
        axes.step(*zip(*line), where="post", color=COLOURS["best"], label="best so far")
    axes.set(xlabel="trial", ylabel=_metric(study), title="Search history")
    axes.grid(alpha=0.3)
    axes.legend()
    return png_base64(figure)


def _last(trial: optuna.trial.FrozenTrial) -> float | None:
    if trial.value is not None:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def _metric(study: optuna.Study) -> str:
    return f"prequential {study.user_attrs.get('metric', 'logloss')}"


def _curves(study: optuna.Study) -> str:
    """Every trial's running value by stream position; pruned trials end where they were stopped."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        steps = sorted(trial.intermediate_values)
        axes.plot(steps, [trial.intermediate_values[s] for s in steps], linewidth=0.8, alpha=0.7,
                  color=COLOURS[trial.state.name.lower()])
    axes.plot([], [], color=COLOURS["complete"], label="complete")
    axes.plot([], [], color=COLOURS["pruned"], label="pruned")
    axes.set(xlabel="rows learned", ylabel=_metric(study), title="Trials along the stream (reports to the pruner)")
    axes.grid(alpha=0.3)
    axes.legend()
    return png_base64(figure)


def importances(study: optuna.Study) -> dict[str, float]:
    """Each parameter's share of the variance of the value (fANOVA over the complete trials), empty
    when fewer than two complete trials or no parameter varied."""
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _importances(weights: dict[str, float]) -> str:
    figure, axes = plt.subplots(figsize=(6, 0.4 * max(len(weights), 3) + 1))
    if weights:
        names = list(weights)[::-1]
        axes.barh(names, [weights[n] for n in names], color=COLOURS["complete"])
    else:
        axes.text(0.5, 0.5, "too few complete trials for importances", ha="center", va="center")
    axes.set(xlabel="importance (share of the value's variance)", title="Parameter importances")
    return png_base64(figure)


def _holdout(result: SearchResult) -> str:
    """The best trial's and the defaults' AUC over windows of the whole stream, the held-back part shaded."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    rows = len(next(iter(result.scored.values())).scores) if result.scored else 0
    bounds = window_bounds(rows)
    for name, scored in result.scored.items():
        windows = over_windows(scored.scores, scored.labels, np.arange(rows, dtype=np.float64), bounds)
        axes.plot([w["end_ts"] for w in windows], [w["auc"] for w in windows], marker=".", label=name,
                  color=COLOURS[name])
    start = rows - result.holdout["rows"]
    axes.axvspan(start, rows, color="#dddddd", alpha=0.6, label="held back")
    axes.set(xlabel="events (time order)", ylabel="prequential AUC", title="Best trial vs defaults")
    axes.grid(alpha=0.3)
    axes.legend()
    return png_base64(figure)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _shown(value: object) -> str:
    """A parameter's value for the table: floats to four significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tables(result: SearchResult) -> str:
    h = result.holdout
    rows = "".join(f"<tr class='holdout'><td>{name}</td><td>{_number(h[name]['auc'])}</td>"
                   f"<td>{_number(h[name]['logloss'])}</td></tr>" for name in ("best", "defaults"))
    holdout = (f"<h2>On the held-back last {h['rows']:,} events</h2><table id='holdout'><tr><th></th>"
               f"<th>AUC</th><th>log loss</th></tr>{rows}</table>")
    t = result.trials
    counts = (f"<p id='counts'>{t['finished']} trials ({t['complete']} complete, {t['pruned']} pruned, {t['fail']} "
              f"failed), {t['this_search']} run by this search in {t['seconds']:.0f} s; best: trial "
              f"{t['best_number']}.</p>")
    complete = sorted(result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                      reverse=result.study.direction == optuna.study.StudyDirection.MAXIMIZE)[:10]
    names = sorted({name for trial in complete for name in trial.params})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["trial", "value", "AUC", "seconds", *names])
    body = "".join(
        f"<tr class='trial'><td>{t.number}</td><td>{_number(t.value)}</td><td>{_number(t.user_attrs.get('auc'))}</td>"
        f"<td>{t.user_attrs.get('seconds', 0):.1f}</td>"
        + "".join(f"<td>{html.escape(_shown(t.params.get(n, '')))}</td>" for n in names) + "</tr>" for t in complete)
    return f"{counts}{holdout}<h2>Best trials</h2><table id='trials'><tr>{head}</tr>{body}</table>"


def write_report(result: SearchResult, directory: str | Path, title: str = "freshrec automl") -> Path:
    """Write `index.html` and `figures.json` into `directory`; returns the HTML's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = importances(result.study)
    plots = {"history": _history(result.study), "curves": _curves(result.study),
             "importances": _importances(weights), "holdout-auc": _holdout(result)}
    intro = ("Each trial learned the stream in time order, every micro-batch scored before it was learned "
             "(prequential), on all but its held-back end; the best trial and the defaults then learned the whole "
             "stream and are compared on that end.")
    return write_page(directory, title, intro, _tables(result), plots, {**result.figures(), "importances": weights})
