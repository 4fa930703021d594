"""The replay A/B report: one self-contained HTML page (plots as embedded PNG images, a table with one
row per arm) and the figures as JSON.

Plots, with event time on the x axis (dates, whatever the stream spans): each arm's AUC over windows
of enough events with its 95 % band, the cumulative AUC, each arm's AUC gap to the first arm with its
band (`freshrec.evaluate.windows`); training CPU seconds per arm; the hybrid's online fusion weight over
the stream. Images are drawn with matplotlib (Agg, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the Agg backend

from freshrec.evaluate.ab import ABResult  # noqa: E402

__all__ = ["png_base64", "write_page", "write_report"]

COLOURS = {"daily": "#d62728", "hourly": "#ff7f0e", "online": "#1f77b4", "hybrid": "#2ca02c"}


def png_base64(figure) -> str:
    """`figure` as a base64 PNG (for an <img> data URL); the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _dates(seconds: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, timezone.utc) for t in seconds]


def _timeline(title: str, ylabel: str, series: dict[str, tuple[list[float], list, list | None, list | None]],
              zero: bool = False) -> str:
    """One line per arm over event time (`series`: name -> (times, values, band low, band high), None
    values left out), its band shaded."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    for name, (times, values, low, high) in series.items():
        kept = [k for k, v in enumerate(values) if v is not None]
        when = _dates([times[k] for k in kept])
        axes.plot(when, [values[k] for k in kept], marker=".", label=name, color=COLOURS.get(name))
        if low is not None:
            axes.fill_between(when, [low[k] for k in kept], [high[k] for k in kept], alpha=0.2,
                              color=COLOURS.get(name))
    if zero:
        axes.axhline(0, color="black", linewidth=0.8)
    axes.set(xlabel="event time (UTC)", ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.autofmt_xdate()
    return png_base64(figure)


def _auc_windows(figures: dict) -> str:
    rows = next(iter(figures.values()))["windows"][0]["rows"]
    series = {name: ([w["end_ts"] for w in arm["windows"]], [w["auc"] for w in arm["windows"]],
                     [w["low"] for w in arm["windows"]], [w["high"] for w in arm["windows"]])
              for name, arm in figures.items()}
    return _timeline(f"AUC over windows of {rows:,} events (95 % band)", "prequential AUC", series)


def _auc_cumulative(figures: dict) -> str:
    series = {name: ([w["end_ts"] for w in arm["windows"]], [w["cumulative_auc"] for w in arm["windows"]], None, None)
              for name, arm in figures.items()}
    return _timeline("Cumulative AUC (every event so far)", "AUC", series)


def _auc_gap(figures: dict) -> str:
    series = {name: ([g["end_ts"] for g in arm["gap"]["windows"]], [g["gap"] for g in arm["gap"]["windows"]],
                     [g["low"] for g in arm["gap"]["windows"]], [g["high"] for g in arm["gap"]["windows"]])
              for name, arm in figures.items() if "gap" in arm}
    reference = next(iter(figures))
    return _timeline(f"AUC gap to {reference} per window (95 % band)", f"AUC - AUC of {reference}", series,
                     zero=True)


def _cost(figures: dict) -> str:
    figure, axes = plt.subplots(figsize=(5, 3.2))
    names = list(figures)
    axes.bar(names, [figures[n]["cpu_seconds"] for n in names], color=[COLOURS.get(n, "grey") for n in names])
    axes.set(ylabel="training CPU seconds", title="Training cost per arm")
    return png_base64(figure)


def _weights(result: ABResult) -> str:
    figure, axes = plt.subplots(figsize=(8, 3.0))
    hybrid = result.arms.get("hybrid")
    points = hybrid.weights if hybrid is not None else []
    if points:
        events, weights = zip(*points)
        axes.plot(events, weights, color=COLOURS["hybrid"])
        axes.set_ylim(0, 1)
    else:
        axes.text(0.5, 0.5, "no fusion weights (no hybrid arm with hedge fusion)", ha="center", va="center")
    axes.set(xlabel="events", ylabel="weight of the online model", title="Fusion weights over time")
    axes.grid(alpha=0.3)
    return png_base64(figure)


def _table(figures: dict) -> str:
    head = ("<tr><th>arm</th><th>rows</th><th>AUC</th><th>AUC from day 2</th><th>logloss</th>"
            "<th>training CPU s</th><th>retrains</th></tr>")

    def number(value, digits=4):
        return "-" if value is None else f"{value:.{digits}f}"
    rows = "".join(
        f"<tr class='arm'><td>{html.escape(name)}</td><td>{arm['rows']:,}</td><td>{number(arm['auc'])}</td>"
        f"<td>{number(arm['auc_from_day2'])}</td><td>{number(arm['logloss'])}</td>"
        f"<td>{number(arm['cpu_seconds'], 1)}</td><td>{arm['retrains']}</td></tr>" for name, arm in figures.items())
    return f"<table id='arms'>{head}{rows}</table>"


def write_report(result: ABResult, directory: str | Path, title: str = "Replay A/B") -> Path:
    """Write `index.html` and `figures.json` into `directory`; returns the HTML's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = result.figures()
    plots = {"auc-windows": _auc_windows(figures), "auc-cumulative": _auc_cumulative(figures)}
    if len(figures) > 1:
        plots["auc-gap"] = _auc_gap(figures)
    plots.update({"cost": _cost(figures), "fusion-weights": _weights(result)})
    intro = ("Every arm scores each micro-batch before learning it (prequential), on the same time-ordered "
             "stream. Training CPU seconds are process time spent learning and retraining.")
    return write_page(directory, title, intro, _table(figures), plots, figures)


def write_page(directory: Path, title: str, intro: str, tables: str, plots: dict[str, str], figures: dict) -> Path:
    """`index.html` (the title, an introduction, the tables' HTML, each plot as an image with its key as
    id) and `figures.json` in `directory`; the page's path."""
    images = "".join(f"<figure><img id='{key}' alt='{key}' src='data:image/png;base64,{data}'></figure>"
                     for key, data in plots.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}"
            f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{tables}{images}"
            "</body></html>")
    path = directory / "index.html"
    path.write_text(page)
    (directory / "figures.json").write_text(json.dumps(figures, indent=1))
    return path
