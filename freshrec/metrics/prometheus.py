"""`ServingMetrics`: the server's Prometheus metrics, on a registry of its own (so several servers
in one process, as in tests, do not collide), exposed with the process's failed durable writes
(`freshrec_write_failures_total{target="registry"|"log"}`, see `freshrec._durable`), its
sources' figures (Kafka consumer lag and events by outcome, see `freshrec.metrics.sources`), the
online trainer's (`TRAINING_METRICS`: events learned, the recent window's AUC and log loss, the
model's rows, dead letters; set by `freshrec run`) and the alerts (`freshrec.metrics.alerts`).

>>> metrics = ServingMetrics()
>>> metrics.latency.labels("/predict").observe(0.004)
>>> metrics.model_version.set(7)
>>> b"freshrec_model_version 7.0" in metrics.exposition()
True
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from freshrec._durable import WRITE_FAULTS
from freshrec.metrics.alerts import ALERT_METRICS
from freshrec.metrics.sources import SOURCE_METRICS

__all__ = ["TRAINING", "TRAINING_METRICS", "ServingMetrics", "TrainingMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class ServingMetrics:
    """Request latency and counts, model version and age, sync lag, freshness, swaps, events, and
    the online model's fusion weight."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.latency = Histogram("freshrec_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("freshrec_requests", "Requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.model_version = Gauge("freshrec_model_version", "Version of the model being served", registry=r)
        self.model_age = Gauge("freshrec_model_age_seconds", "Seconds since the served version was published",
                               registry=r)
        self.sync_lag = Histogram("freshrec_sync_lag_seconds", "Publish-to-serve delay of each applied version",
                                  buckets=FRESHNESS_BUCKETS, registry=r)
        self.freshness = Histogram("freshrec_freshness_seconds",
                                   "Event entering the source -> first prediction served by a model that "
                                   "learned it (the oldest event of each applied delta)",
                                   buckets=FRESHNESS_BUCKETS, registry=r)
        self.swaps = Counter("freshrec_swaps", "Model swaps by kind (delta, full)", ["kind"], registry=r)
        self.sync_errors = Counter("freshrec_sync_errors", "Versions refused or failed by reason", ["reason"],
                                   registry=r)
        self.events = Counter("freshrec_events_accepted", "Events accepted by POST /events", registry=r)
        self.behind = Gauge("freshrec_serving_behind", "1 while the server cannot follow the registry (a refused "
                            "version or a gap in the deltas) until a full snapshot comes", registry=r)
        self.fusion_weight = Gauge("freshrec_fusion_online_weight",
                                   "Hedge weight of the online model in the served score (1: online only)", registry=r)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return b"".join(generate_latest(r) for r in (self.registry, WRITE_FAULTS, SOURCE_METRICS, TRAINING_METRICS,
                                                     ALERT_METRICS))


class TrainingMetrics:
    """The online trainer's figures, as the loop last reported them (`freshrec run` sets them after
    each chunk; one trainer a process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.learned = Counter("freshrec_events_learned", "Events the online model learned", registry=registry)
        self.window_auc = Gauge("freshrec_window_auc", "Prequential AUC over the recent window", registry=registry)
        self.window_logloss = Gauge("freshrec_window_logloss", "Prequential log loss over the recent window",
                                    registry=registry)
        self.rows = Gauge("freshrec_model_rows", "Embedding rows the online model holds", registry=registry)
        self.evicted = Counter("freshrec_model_rows_evicted", "Embedding rows the online model evicted (eviction, TTL)",
                               registry=registry)
        self.dead_letters = Counter("freshrec_dead_letters", "Records sent to the dead letters, by reason", ["reason"],
                                    registry=registry)


TRAINING_METRICS = CollectorRegistry()
TRAINING = TrainingMetrics(TRAINING_METRICS)
