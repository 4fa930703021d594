"""Alerts: each rule fires past its bound and clears within it, once per change (gauge, counter, log),
the webhook receives each change as JSON and a failing one is counted; the Page-Hinkley test finds the
changes river's finds; the loop's watch reads a real engine's figures after each chunk."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from prometheus_client import generate_latest
from river.drift import PageHinkley as RiverPageHinkley

from freshrec.engine.watch import LoopWatch
from freshrec.metrics.alerts import ALERT_METRICS, Alerts, PageHinkley, Reading
from freshrec.metrics.prometheus import TRAINING_METRICS


def _gauge(name: str) -> float:
    text = generate_latest(ALERT_METRICS).decode()
    line = next(line for line in text.splitlines() if line.startswith(f'freshrec_alert_firing{{alert="{name}"}}'))
    return float(line.split()[-1])


@pytest.mark.parametrize(("reading", "name"), [
    (Reading(now=0.0, model_age=301.0), "staleness"),
    (Reading(now=0.0, idle=61.0, waiting=True), "stalled"),
    (Reading(now=0.0, window_auc=0.64, run_auc=0.70), "auc_drop"),
    (Reading(now=0.0, drift=True), "drift"),
    (Reading(now=0.0, dead_letter_share=0.02), "dead_letters"),
])
def test_each_alert_fires_past_its_bound(reading: Reading, name: str) -> None:
    alerts = Alerts()
    changes = alerts.evaluate(reading)
    assert [(c.name, c.firing) for c in changes] == [(name, True)] and _gauge(name) == 1
    assert alerts.evaluate(reading) == []                          # still firing: no new change
    assert list(alerts.firing()) == [name]


def test_within_bounds_nothing_fires_and_a_fired_alert_clears() -> None:
    alerts = Alerts()
    calm = Reading(now=0.0, model_age=299.0, idle=600.0, waiting=False, window_auc=0.69, run_auc=0.70,
                   dead_letter_share=0.005)
    assert alerts.evaluate(calm) == []                             # idle, but nothing waits: not stalled
    alerts.evaluate(Reading(now=1.0, model_age=900.0))
    cleared = alerts.evaluate(Reading(now=2.0, model_age=1.0))
    assert [(c.name, c.firing) for c in cleared] == [("staleness", False)] and _gauge("staleness") == 0
    assert alerts.firing() == {}


def test_a_bound_of_none_never_fires() -> None:
    alerts = Alerts(staleness=None, stalled=None, auc_drop=None, dead_letter_rate=None)
    assert alerts.evaluate(Reading(now=0.0, model_age=1e9, idle=1e9, window_auc=0.1, run_auc=0.9,
                                   dead_letter_share=1.0)) == []


@pytest.fixture
def hook():
    """A webhook that keeps the JSON bodies posted to it."""
    got: list[dict] = []
    arrived = threading.Semaphore(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.release()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got, arrived
    server.shutdown()
    server.server_close()


def test_the_webhook_gets_each_change(hook) -> None:
    url, got, arrived = hook
    alerts = Alerts(webhook=url)
    alerts.evaluate(Reading(now=5.0, model_age=400.0))
    alerts.evaluate(Reading(now=6.0, model_age=1.0))
    assert arrived.acquire(timeout=60) and arrived.acquire(timeout=60)
    assert sorted((g["alert"], g["firing"], g["at"]) for g in got) == [("staleness", False, 6.0),
                                                                      ("staleness", True, 5.0)]


def test_a_failing_webhook_is_counted(caplog) -> None:
    before = ALERT_METRICS.get_sample_value("freshrec_alert_webhook_failures_total") or 0
    alerts = Alerts(webhook="http://127.0.0.1:9/alerts")   # nothing listens on the discard port
    alerts.evaluate(Reading(now=0.0, model_age=400.0))
    for thread in [t for t in threading.enumerate() if t.name == "alert-webhook"]:
        thread.join(timeout=60)
    assert ALERT_METRICS.get_sample_value("freshrec_alert_webhook_failures_total") == before + 1


@pytest.mark.parametrize("seed", range(5))
def test_page_hinkley_finds_the_changes_rivers_finds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream = np.concatenate([rng.normal(0.5, 0.1, 400), rng.normal(0.9, 0.1, 400), rng.normal(0.6, 0.1, 400)])
    ours, theirs = PageHinkley(threshold=10.0), RiverPageHinkley(threshold=10.0, mode="up")
    found, expected = [], []
    for i, x in enumerate(stream.tolist()):
        if ours.update(x):
            found.append(i)
        theirs.update(x)
        if theirs.drift_detected:
            expected.append(i)
    assert found == expected and found and 400 <= found[0] < 440


def test_the_watch_reads_an_engines_figures_after_each_chunk(tmp_path) -> None:
    from freshrec.config import FreshrecConfig
    from freshrec.engine.run import run as run_engine
    from freshrec.events.simulator import Simulator, SimulatorConfig

    settings = FreshrecConfig.model_validate({"training": {"offline_interval": None}, "serve": {"enabled": False}})
    times = iter(float(t) for t in range(10_000))
    watch = LoopWatch(Alerts(), dead_letters=dict, drift=PageHinkley(), clock=lambda: next(times))
    source = Simulator(SimulatorConfig(n_users=200, n_items=100, batch_size=1000, total_events=5000))
    figures = run_engine(source, settings, tmp_path, on_chunk=watch.on_chunk)
    reading = watch.reading()
    assert 0 < reading.idle < 5 and reading.window_auc is not None and reading.run_auc == figures["auc"]
    assert reading.dead_letter_share == 0.0 and reading.waiting
    assert TRAINING_METRICS.get_sample_value("freshrec_events_learned_total") >= 5000
    assert TRAINING_METRICS.get_sample_value("freshrec_model_rows") == figures["live_ids"]


def test_the_watch_counts_dead_letters_by_reason_and_their_share(tmp_path) -> None:
    from collections import Counter

    from freshrec.config import FreshrecConfig
    from freshrec.engine.run import run as run_engine
    from freshrec.events.simulator import Simulator, SimulatorConfig

    settings = FreshrecConfig.model_validate({"training": {"offline_interval": None}, "serve": {"enabled": False}})
    refused = Counter()

    def letters() -> Counter:
        refused["bad_label"] += 10   # ten more each chunk
        return refused

    before = TRAINING_METRICS.get_sample_value("freshrec_dead_letters_total", {"reason": "bad_label"}) or 0
    watch = LoopWatch(Alerts(dead_letter_rate=0.005), dead_letters=letters)
    source = Simulator(SimulatorConfig(n_users=50, n_items=20, batch_size=1000, total_events=3000))
    run_engine(source, settings, tmp_path, on_chunk=watch.on_chunk)
    counted = TRAINING_METRICS.get_sample_value("freshrec_dead_letters_total", {"reason": "bad_label"}) - before
    assert counted == refused["bad_label"] > 0
    reading = watch.reading()
    assert reading.dead_letter_share == pytest.approx(counted / (3000 + counted))
    assert [c.name for c in watch.alerts.evaluate(reading)] == ["dead_letters"]
