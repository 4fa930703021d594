"""The replay A/B report: one self-contained HTML page (plots as embedded PNG images, a table with one
row per arm) and the figures as JSON.

Plots: AUC per day per arm, training CPU seconds per arm, the hybrid's online fusion weight over the
stream. Images are drawn with matplotlib (Agg, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the Agg backend

from freshrec.evaluate.ab import ABResult  # noqa: E402

__all__ = ["write_report"]

COLOURS = {"daily": "#d62728", "hourly": "#ff7f0e", "online": "#1f77b4", "hybrid": "#2ca02c"}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _auc_per_day(figures: dict) -> str:
    figure, axes = plt.subplots(figsize=(8, 3.6))
    for name, arm in figures.items():
        days = sorted(arm["per_day"])
        axes.plot(days, [arm["per_day"][d]["auc"] for d in days], marker=".", label=name,
                  color=COLOURS.get(name))
    axes.set(xlabel="day of the stream (event time)", ylabel="prequential AUC", title="AUC per day")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def _cost(figures: dict) -> str:
    figure, axes = plt.subplots(figsize=(5, 3.2))
    names = list(figures)
    axes.bar(names, [figures[n]["cpu_seconds"] for n in names], color=[COLOURS.get(n, "grey") for n in names])
    axes.set(ylabel="training CPU seconds", title="Training cost per arm")
    return _png(figure)


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
    return _png(figure)


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
    plots = {"auc-per-day": _auc_per_day(figures), "cost": _cost(figures), "fusion-weights": _weights(result)}
    images = "".join(f"<figure><img id='{key}' alt='{key}' src='data:image/png;base64,{data}'></figure>"
                     for key, data in plots.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}"
            f"</style></head><body><h1>{html.escape(title)}</h1>"
            "<p>Every arm scores each micro-batch before learning it (prequential), on the same time-ordered "
            "stream. Training CPU seconds are process time spent learning and retraining.</p>"
            f"{_table(figures)}{images}</body></html>")
    path = directory / "index.html"
    path.write_text(page)
    (directory / "figures.json").write_text(json.dumps(figures, indent=1))
    return path
