"""`GET /dashboard`: a live view of the loop a server belongs to, drawn with uPlot (vendored in
`freshrec/serve/static`, MIT; nothing is fetched from a CDN). The page polls `GET /dashboard/data`
every second, a JSON snapshot of the process's counters and gauges (`snapshot`), and keeps the last
ten minutes in the browser: events learned per second, Kafka consumer lag, the prequential AUC and
log loss over the recent window, freshness p50/p99, the served version and its age, requests per
second and mean latency per endpoint, dead letters by reason, the model's rows and evictions, the fusion
weight, the alerts firing, and, in a live experiment, each arm's CTR (with its interval), p99 latency and
CPU per request. Counters are sent as totals; the page turns them into rates.

>>> from freshrec.serve.service import ModelService
>>> from freshrec.snapshot import ModelRegistry
>>> import tempfile
>>> data = snapshot(ModelService(ModelRegistry(tempfile.mkdtemp())))
>>> sorted(data)[:6], data["version"]
(['age', 'alerts', 'arms', 'dead_letters', 'events_learned', 'evicted'], None)
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from freshrec.metrics.alerts import ALERT_METRICS
from freshrec.metrics.prometheus import TRAINING_METRICS
from freshrec.metrics.sources import SOURCE_METRICS
from freshrec.serve.arms import arm_figures

__all__ = ["STATIC", "add_dashboard", "snapshot"]

STATIC = Path(__file__).resolve().parent / "static"
RECENT_FRESHNESS = 200   # the latest freshness measurements the percentiles are taken over


def _samples(registry: CollectorRegistry) -> dict[str, list]:
    """Sample name -> [(labels, value)] of a registry."""
    out: dict[str, list] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _total(samples: dict[str, list], name: str) -> float | None:
    values = [value for _, value in samples.get(name, [])]
    return sum(values) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def snapshot(service, experiment=None) -> dict:
    """The dashboard's numbers now (see the module docstring); None where the process has none (e.g.
    no trainer beside a server alone, no Kafka source); `arms`: the `experiment`'s figures per arm."""
    served, trained = _samples(service.metrics.registry), _samples(TRAINING_METRICS)
    source, alerts = _samples(SOURCE_METRICS), _samples(ALERT_METRICS)
    requests: dict[str, float] = {}
    for labels, value in served.get("freshrec_requests_total", []):
        requests[labels["endpoint"]] = requests.get(labels["endpoint"], 0.0) + value
    latency = {labels["endpoint"]: value for labels, value in served.get("freshrec_request_seconds_sum", [])}
    recent = list(service.freshness)[-RECENT_FRESHNESS:]
    current = service.switcher.current
    return {
        "time": time.time(),
        "events_learned": _total(trained, "freshrec_events_learned_total"),
        "window_auc": _total(trained, "freshrec_window_auc"),
        "window_logloss": _total(trained, "freshrec_window_logloss"),
        "rows": _total(trained, "freshrec_model_rows"),
        "evicted": _total(trained, "freshrec_model_rows_evicted_total"),
        "dead_letters": {labels["reason"]: value for labels, value in trained.get("freshrec_dead_letters_total", [])},
        "kafka_lag": _total(source, "freshrec_kafka_consumer_lag"),
        "freshness": {"p50": _percentile(recent, 0.5), "p99": _percentile(recent, 0.99)},
        "version": None if current is None else current.version,
        "age": None if current is None else time.time() - current.created_at,
        "swaps": _total(served, "freshrec_swaps_total") or 0.0,
        "fusion_weight": _total(served, "freshrec_fusion_online_weight"),
        "requests": requests, "latency_sum": latency,
        "alerts": {labels["alert"]: bool(value) for labels, value in alerts.get("freshrec_alert_firing", [])},
        "arms": {} if experiment is None else arm_figures(experiment.current()),
    }


def add_dashboard(app, service, experiment=None) -> None:
    """`GET /dashboard` (the page), `GET /dashboard/data` (`snapshot`) and `/dashboard/static/` on `app`
    (kept out of the API's schema: they are the page's, not the API)."""
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(_PAGE)

    @app.get("/dashboard/data", include_in_schema=False)
    def data() -> JSONResponse:
        return JSONResponse(snapshot(service, experiment), headers={"cache-control": "no-store"})

    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>freshrec</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/static/uPlot.min.css">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{display:flex;gap:1.5em;align-items:baseline;padding:.6em 1em;background:#fff;border-bottom:1px solid #ddd}
header h1{font-size:1.2em;margin:0}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:.8em;padding:.8em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em .6em}
.card h2{font-size:.9em;margin:.2em 0 .4em;font-weight:600}
#alerts span{display:inline-block;margin-right:.8em;padding:.1em .5em;border-radius:4px;background:#e7f5e9}
#alerts span.firing{background:#fde2e1;color:#a40000;font-weight:600}
</style></head><body>
<header><h1>freshrec</h1><div>version <b id="version">-</b></div><div>model age <b id="age">-</b></div>
<div id="alerts"></div><div id="status"></div></header>
<div id="grid"></div>
<script src="/dashboard/static/uPlot.iife.min.js"></script>
<script src="/dashboard/static/dashboard.js"></script>
</body></html>
"""
