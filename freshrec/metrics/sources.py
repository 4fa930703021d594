"""Metrics of the stream's sources, on a registry of their own (`SOURCE_METRICS`) that the server's
/metrics includes: consumer lag per Kafka partition, from librdkafka's statistics (`kafka_statistics`
is the consumer's `stats_cb`; the lag is to the offsets handed to the source, `consumer_lag_stored`:
librdkafka's `consumer_lag` counts from the committed offsets, which the engine commits only at
checkpoints), the events a Kafka source took or dead-lettered, by reason, and the partition
assignments its consumer received (one at the start; each more is a rebalance).

>>> kafka_statistics('{"topics": {"t": {"partitions": {"0": {"consumer_lag_stored": 12}, "-1": {}}}}}')
>>> KAFKA_LAG.labels("t", "0")._value.get()
12.0
>>> KAFKA_EVENTS.labels("t", "taken").inc(3)
>>> b'freshrec_kafka_events_total{outcome="taken",topic="t"} 3.0' in generate_latest(SOURCE_METRICS)
True
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["KAFKA_ASSIGNMENTS", "KAFKA_EVENTS", "KAFKA_LAG", "SOURCE_METRICS", "generate_latest", "kafka_statistics"]

SOURCE_METRICS = CollectorRegistry()
KAFKA_LAG = Gauge("freshrec_kafka_consumer_lag", "Messages on a partition not handed to the source yet",
                  ["topic", "partition"], registry=SOURCE_METRICS)
KAFKA_EVENTS = Counter("freshrec_kafka_events", "Events a Kafka source took (outcome=taken) or dead-lettered (outcome: "
                       "the reason; a whole bad message counts once)", ["topic", "outcome"], registry=SOURCE_METRICS)
KAFKA_ASSIGNMENTS = Counter("freshrec_kafka_assignments", "Partition assignments a Kafka source's consumer received "
                            "(one at the start; each more is a rebalance)", ["topic"], registry=SOURCE_METRICS)


def kafka_statistics(text: str) -> None:
    """Take librdkafka's statistics (JSON, every `statistics.interval.ms`): each assigned
    partition's consumer lag (partitions whose lag is not known yet, -1, are left as they were)."""
    for topic, figures in json.loads(text).get("topics", {}).items():
        for partition, values in figures.get("partitions", {}).items():
            if partition != "-1" and values.get("consumer_lag_stored", -1) >= 0:
                KAFKA_LAG.labels(topic, partition).set(values["consumer_lag_stored"])
