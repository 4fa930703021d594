"""The metrics `freshrec autoscale` scales on, each read by a small reader with `read(now) -> float | None`
(None: no reading this time, and the policy holds):

- `lag`: the consumer group's lag on the Kafka topic, summed over partitions (high watermark minus the
  committed offset: the group commits after each checkpoint cut), as KEDA's Kafka scaler reads it;
- `lag_seconds`: that lag over the rate the committed offsets moved in the last minute;
- `events_per_s`: events the group committed per second (its cuts, `STATE/cuts`), any source;
- `cpu_util`: this machine's CPU use since the last reading (/proc/stat), 0..1;
- `gpu_util`: the mean use of this machine's GPUs (NVML, the `nvidia-ml-py` package), 0..1;
- `freshness`: the median time from an event entering the source to the first prediction of a model
  that learned it, over the servers' new observations (their `/metrics` histogram);
- `p99_latency`: the servers' 99th-percentile request latency over their new requests (`/metrics`).

A reader that holds a connection (`KafkaLag`) also has `close()`.

>>> util = CpuUtil(stat=iter(["cpu 10 0 10 80 0 0 0 0 0 0", "cpu 40 0 20 140 0 0 0 0 0 0"]).__next__)
>>> util.read(0.0), util.read(1.0)
(None, 0.4)
>>> histogram_quantile([(0.1, 0.0), (0.5, 50.0), (1.0, 100.0), (float("inf"), 100.0)], 0.99)
0.99
"""

from __future__ import annotations

import math
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from freshrec.cluster.cuts import latest_cut
from freshrec.config import FreshrecConfig
from freshrec.config.sections import KafkaSection

__all__ = ["CpuUtil", "EventsPerSecond", "GpuUtil", "KafkaLag", "ServerHistogram", "histogram_quantile",
           "metric_reader"]

WINDOW = 60.0   # seconds of readings behind a rate


class _Rate:
    """The rate of a growing counter over the readings of the last `WINDOW` seconds."""

    def __init__(self) -> None:
        self._seen: deque[tuple[float, float]] = deque()

    def add(self, now: float, count: float) -> float | None:
        self._seen.append((now, count))
        while len(self._seen) > 2 and now - self._seen[1][0] >= WINDOW:
            self._seen.popleft()
        (t0, c0), (t1, c1) = self._seen[0], self._seen[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None


class KafkaLag:
    """The consumer group's lag in events (`seconds`: in seconds at its recent rate)."""

    def __init__(self, kafka: KafkaSection, seconds: bool = False) -> None:
        from confluent_kafka import Consumer  # never subscribes: reads offsets without joining the group

        self.topic, self.seconds, self._rate = kafka.topic, seconds, _Rate()
        self._consumer = Consumer({**kafka.settings, "bootstrap.servers": kafka.bootstrap, "group.id": kafka.group,
                                   "enable.auto.commit": False})

    def read(self, now: float) -> float | None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            topic = self._consumer.list_topics(self.topic, timeout=5).topics[self.topic]
            parts = [TopicPartition(self.topic, p) for p in topic.partitions]
            committed = self._consumer.committed(parts, timeout=5)
            lag = done = 0
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=5)
                at = tp.offset if tp.offset >= 0 else low
                lag, done = lag + max(0, high - at), done + at
        except (KafkaException, KeyError):
            return None   # broker or topic not reachable this time
        rate = self._rate.add(now, done)
        if not self.seconds:
            return float(lag)
        return lag / rate if rate else (0.0 if lag == 0 else None)

    def close(self) -> None:
        """Close the connection to the brokers."""
        self._consumer.close()


class EventsPerSecond:
    """Events the group committed per second, from its newest cut."""

    def __init__(self, state: Path) -> None:
        self.state, self._rate = Path(state), _Rate()

    def read(self, now: float) -> float | None:
        cut = latest_cut(self.state)
        return self._rate.add(now, cut["events"] if cut else 0)


def _proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.readline()


class CpuUtil:
    """This machine's CPU use (all cores) since the last reading."""

    def __init__(self, stat: Callable[[], str] = _proc_stat) -> None:
        self._stat, self._last = stat, None

    def read(self, now: float) -> float | None:
        ticks = [float(x) for x in self._stat().split()[1:]]
        idle, total = ticks[3] + ticks[4], sum(ticks[:8])   # idle + iowait; guest time is inside user
        last, self._last = self._last, (idle, total)
        if last is None or total <= last[1]:
            return None
        return 1.0 - (idle - last[0]) / (total - last[1])


class GpuUtil:
    """The mean use of this machine's GPUs (NVML)."""

    def __init__(self) -> None:
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception as error:   # the package missing, or no driver
            raise RuntimeError(f"autoscale.metric gpu_util needs NVML (pip install nvidia-ml-py, an NVIDIA "
                               f"driver): {error}") from None
        self._nvml = pynvml
        self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        if not self._gpus:
            raise RuntimeError("autoscale.metric gpu_util: NVML sees no GPU on this machine")

    def read(self, now: float) -> float | None:
        return sum(self._nvml.nvmlDeviceGetUtilizationRates(g).gpu for g in self._gpus) / 100.0 / len(self._gpus)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a Prometheus histogram's (upper bound, cumulative count) buckets, linear
    inside a bucket as PromQL's `histogram_quantile`; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


class ServerHistogram:
    """A quantile of the servers' histogram `name` (summed over servers and labels) over the
    observations since the last reading; a server that does not answer is left out."""

    def __init__(self, servers: Sequence[str], name: str, q: float, timeout: float = 2.0) -> None:
        self.servers, self.name, self.q, self.timeout = tuple(servers), name, q, timeout
        self._last: dict[float, float] = {}

    def read(self, now: float) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        counts: dict[float, float] = {}
        for url in self.servers:
            try:
                with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=self.timeout) as answer:
                    text = answer.read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == f"{self.name}_bucket":
                        bound = float(sample.labels["le"])
                        counts[bound] = counts.get(bound, 0.0) + sample.value
        last, self._last = self._last, counts
        new = sorted((bound, count - last.get(bound, 0.0)) for bound, count in counts.items())
        return histogram_quantile(new, self.q)


def metric_reader(config: FreshrecConfig, state: Path, servers: Sequence[str]):
    """The reader of `config.autoscale.metric`; ValueError when the run cannot give it."""
    metric, kafka = config.autoscale.metric, config.source.kind == "kafka"
    if metric in ("lag", "lag_seconds"):
        if not kafka:
            raise ValueError(f"autoscale.metric {metric}: needs source.kind kafka (a replay has no lag); "
                             "scale on events_per_s or cpu_util")
        return KafkaLag(config.source.kafka, seconds=metric == "lag_seconds")
    if metric in ("freshness", "p99_latency"):
        if not servers:
            raise ValueError(f"autoscale.metric {metric}: read from servers: give autoscale.servers or serve.enabled")
        name, q = ("freshrec_freshness_seconds", 0.5) if metric == "freshness" else ("freshrec_request_seconds", 0.99)
        return ServerHistogram(servers, name, q)
    return {"events_per_s": lambda: EventsPerSecond(state), "cpu_util": CpuUtil, "gpu_util": GpuUtil}[metric]()
