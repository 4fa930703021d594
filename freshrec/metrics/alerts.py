"""Alerts on a running loop: a stale served model, stalled training, the AUC falling, concept drift, too
many dead letters. `Alerts.evaluate(reading)` turns a `Reading` (a snapshot of the loop's numbers) into
each alert's state; every change is logged, counted, set on the `freshrec_alert_firing{alert=...}`
gauge (`ALERT_METRICS`, which the server's `/metrics` exposes) and, with a webhook, POSTed as JSON.

- `staleness`: the served model is older than the bound (it fires while the trainer is down);
- `stalled`: no event learned for the bound while events wait;
- `auc_drop`: the AUC over the recent window is `auc_drop` below the run's AUC so far;
- `drift`: a Page-Hinkley test on each micro-batch's mean log loss (an increase) passed its threshold;
- `dead_letters`: the share of the recent records that went to the dead letters passed the bound.

>>> alerts = Alerts(staleness=300.0, stalled=None, auc_drop=0.05, dead_letter_rate=None)
>>> [a.name for a in alerts.evaluate(Reading(now=1000.0, model_age=400.0, window_auc=0.70, run_auc=0.72))]
['staleness']
>>> alerts.firing()
{'staleness': 'the served model is 400 s old (bound 300 s)'}
>>> [(a.name, a.firing) for a in alerts.evaluate(Reading(now=1010.0, model_age=2.0, window_auc=0.6, run_auc=0.72))]
[('staleness', False), ('auc_drop', True)]
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.request
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ALERT_METRICS", "AlertChange", "Alerts", "PageHinkley", "Reading"]

log = logging.getLogger(__name__)
ALERT_METRICS = CollectorRegistry()
_FIRING = Gauge("freshrec_alert_firing", "1 while the alert fires", ["alert"], registry=ALERT_METRICS)
_FIRED = Counter("freshrec_alerts_fired", "Times the alert started firing", ["alert"], registry=ALERT_METRICS)
_WEBHOOK_FAILURES = Counter("freshrec_alert_webhook_failures", "Alert webhook posts that failed",
                            registry=ALERT_METRICS)
NAMES = ("staleness", "stalled", "auc_drop", "drift", "dead_letters")


class PageHinkley:
    """The Page-Hinkley test for an increase in the mean of a stream (Page 1954, Hinkley 1971): with
    x̄ the running mean, m = Σ (x - x̄ - delta) (each term faded by `alpha`) and M its minimum so far,
    a change is detected once m - M > `threshold` (after `min_instances` values); the test then
    starts over. As `river.drift.PageHinkley(mode="up")` (tests/metrics compares them).

    >>> test = PageHinkley(threshold=5.0)
    >>> [i for i, x in enumerate([0.5] * 50 + [1.5] * 50) if test.update(x)]
    [55]
    """

    def __init__(self, delta: float = 0.005, threshold: float = 50.0, alpha: float = 1 - 1e-4,
                 min_instances: int = 30) -> None:
        self.delta, self.threshold, self.alpha, self.min_instances = delta, threshold, alpha, min_instances
        self._reset()

    def _reset(self) -> None:
        self.n, self.mean, self.sum, self.minimum = 0, 0.0, 0.0, math.inf

    def update(self, x: float) -> bool:
        """Add `x`; True when a change is detected at it."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.sum = self.alpha * self.sum + (x - self.mean - self.delta)
        self.minimum = min(self.minimum, self.sum)
        if self.n >= self.min_instances and self.sum - self.minimum > self.threshold:
            self._reset()
            return True
        return False


@dataclass(frozen=True)
class Reading:
    """What the alerts look at, at wall time `now` (None: not known, e.g. nothing served yet):
    `model_age` of the served model (s); `idle` seconds since an event was last learned, and whether
    events `waiting` to be learned; the AUC over the recent `window_auc` and the whole run `run_auc`;
    `drift` (the Page-Hinkley test fired since the last reading); `dead_letter_share` of the recent
    records."""

    now: float
    model_age: float | None = None
    idle: float | None = None
    waiting: bool = True
    window_auc: float | None = None
    run_auc: float | None = None
    drift: bool = False
    dead_letter_share: float | None = None


@dataclass(frozen=True)
class AlertChange:
    """An alert that started (`firing`) or stopped firing at `at`, with what it saw."""

    name: str
    firing: bool
    at: float
    message: str

    def to_json(self) -> dict:
        return {"alert": self.name, "firing": self.firing, "at": self.at, "message": self.message}


class Alerts:
    """The alerts' bounds (None: that alert never fires; see the module docstring) and states."""

    def __init__(self, staleness: float | None = 300.0, stalled: float | None = 60.0, auc_drop: float | None = 0.05,
                 dead_letter_rate: float | None = 0.01, webhook: str | None = None) -> None:
        self.staleness, self.stalled, self.auc_drop, self.dead_letter_rate = staleness, stalled, auc_drop, \
            dead_letter_rate
        self.webhook = webhook
        self._messages: dict[str, str] = {}   # the firing alerts' messages
        for name in NAMES:
            _FIRING.labels(name).set(0)

    def evaluate(self, reading: Reading) -> list[AlertChange]:
        """Each alert's state at `reading`; the changes (logged, counted, posted)."""
        changes = []
        for name, message in self._checks(reading):
            firing = message is not None
            if firing == (name in self._messages):
                if firing:
                    self._messages[name] = message
                continue
            change = AlertChange(name, firing, reading.now, message or f"{name}: back within its bound")
            if firing:
                self._messages[name] = message
                _FIRED.labels(name).inc()
            else:
                del self._messages[name]
            _FIRING.labels(name).set(int(firing))
            (log.warning if firing else log.info)("alert %s %s: %s", name, "firing" if firing else "cleared",
                                                  change.message)
            self._post(change)
            changes.append(change)
        return changes

    def firing(self) -> dict[str, str]:
        """The alerts firing now, with their messages."""
        return dict(self._messages)

    def _checks(self, r: Reading):
        """(alert, message when it fires else None), for each alert with a bound."""
        if self.staleness is not None and r.model_age is not None:
            yield "staleness", (f"the served model is {r.model_age:.0f} s old (bound {self.staleness:g} s)"
                                if r.model_age > self.staleness else None)
        if self.stalled is not None and r.idle is not None:
            yield "stalled", (f"no event learned for {r.idle:.0f} s while events wait (bound {self.stalled:g} s)"
                              if r.waiting and r.idle > self.stalled else None)
        if self.auc_drop is not None and r.window_auc is not None and r.run_auc is not None:
            drop = r.run_auc - r.window_auc
            yield "auc_drop", (f"the recent AUC {r.window_auc:.4f} is {drop:.4f} below the run's {r.run_auc:.4f} "
                               f"(bound {self.auc_drop:g})" if drop > self.auc_drop else None)
        yield "drift", "the micro-batches' log loss rose (Page-Hinkley)" if r.drift else None
        if self.dead_letter_rate is not None and r.dead_letter_share is not None:
            yield "dead_letters", (f"{100 * r.dead_letter_share:.2f} % of the recent records were dead letters "
                                   f"(bound {100 * self.dead_letter_rate:g} %)"
                                   if r.dead_letter_share > self.dead_letter_rate else None)

    def _post(self, change: AlertChange) -> None:
        """POST the change to the webhook, off the caller's thread; a failure is logged and counted."""
        if self.webhook is None:
            return

        def post() -> None:
            request = urllib.request.Request(self.webhook, json.dumps(change.to_json()).encode(),
                                             {"content-type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError as error:
                _WEBHOOK_FAILURES.inc()
                log.warning("alert webhook %s: %s", self.webhook, error)

        threading.Thread(target=post, name="alert-webhook", daemon=True).start()
