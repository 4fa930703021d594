"""Live A/B arms: one server holds several models (`experiment.arms` in the config) and buckets each
user into one of them by a salted hash of the user id, so a user always meets the same arm.

An arm is a `ModelService` that follows the registry its own way (every version, full snapshots only,
or a frozen version; its own registry; with or without the offline blend); arms that follow the
server's registry as the server does share its service. `/predict` and `/recommend` answer with the
arm; labelled events posted back are attributed to their `arm` (as the answer named it) or, without
one, to the user's bucket. Each arm's `ArmTally` counts requests, their latency and CPU time (cost),
labelled events and clicks; `arm_figures` turns tallies into CTR with a 95% Wilson interval, the lift
over the control (the first arm) with a two-proportion z-test, latency percentiles and CPU per request.
Each server process writes its tallies to `experiment.log` every second (`ArmsLog`), which `freshrec
evaluate arms` merges.

>>> from freshrec.config import ExperimentSection
>>> tally = ArmTally()
>>> tally.record_events([1, 0, 0, 1]); tally.record_request(0.002, 0.0015, items=10)
>>> tally.clicks, tally.labelled, tally.requests
(2, 4, 1)
>>> figures = arm_figures({"a": ArmTally(labelled=1000, clicks=100), "b": ArmTally(labelled=1000, clicks=150)})
>>> round(figures["b"]["ctr"], 3), round(figures["b"]["lift"], 2), figures["b"]["p_value"] < 0.01
(0.15, 0.5, True)
>>> splitter = Splitter(("a", "b"), (0.5, 0.5), "salt")
>>> splitter.arm_of(7) == splitter.arm_of("7"), sorted({splitter.arm_of(u) for u in range(100)})
(True, ['a', 'b'])
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from freshrec.config import ExperimentSection
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry

__all__ = ["LATENCY_EDGES", "ArmTally", "ArmsLog", "Experiment", "Splitter", "arm_figures", "wilson"]

LATENCY_EDGES = tuple(float(f"{10 ** (i / 10 - 5):.3g}") for i in range(61))
"""Upper edges of the latency buckets, seconds: 10 µs to 10 s, ten per decade (the last bucket: above)."""
Z95 = 1.959963984540054


@dataclass
class ArmTally:
    """What one arm served and learned of its users in one process; tallies add up (`merge`)."""

    requests: int = 0
    items: int = 0           # items answered
    seconds: float = 0.0     # wall time scoring
    cpu_seconds: float = 0.0   # CPU time scoring
    sync_cpu_seconds: float = 0.0   # CPU time following its registry
    labelled: int = 0        # labelled events attributed to the arm
    clicks: int = 0          # of which positive
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES) + 1))
    version: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record_request(self, seconds: float, cpu_seconds: float, items: int) -> None:
        bucket = bisect.bisect_left(LATENCY_EDGES, seconds)
        with self._lock:
            self.requests += 1
            self.items += items
            self.seconds += seconds
            self.cpu_seconds += cpu_seconds
            self.latency[bucket] += 1

    def record_events(self, labels: Iterable[float]) -> None:
        """Count labelled events (labels 0 or 1)."""
        labels = list(labels)
        with self._lock:
            self.labelled += len(labels)
            self.clicks += int(sum(labels))

    def merge(self, other: ArmTally) -> ArmTally:
        """The two tallies together (the version: the newer)."""
        versions = [v for v in (self.version, other.version) if v is not None]
        return ArmTally(self.requests + other.requests, self.items + other.items, self.seconds + other.seconds,
                        self.cpu_seconds + other.cpu_seconds, self.sync_cpu_seconds + other.sync_cpu_seconds,
                        self.labelled + other.labelled, self.clicks + other.clicks,
                        [a + b for a, b in zip(self.latency, other.latency)], max(versions) if versions else None)

    def to_dict(self) -> dict:
        with self._lock:
            return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArmTally:
        """A tally from `to_dict`'s output; ValueError when it is not one."""
        try:
            tally = cls(**data)
        except TypeError as error:
            raise ValueError(f"not an arm tally: {error}") from None
        if len(tally.latency) != len(LATENCY_EDGES) + 1:
            raise ValueError(f"an arm tally with {len(tally.latency)} latency buckets, not {len(LATENCY_EDGES) + 1}")
        return tally

    def percentile(self, q: float) -> float | None:
        """The latency (seconds) at quantile `q`: the upper edge of its bucket; None before any request."""
        if not self.requests:
            return None
        rank, seen = q * self.requests, 0
        for bucket, count in enumerate(self.latency):
            seen += count
            if seen >= rank and count:
                return LATENCY_EDGES[min(bucket, len(LATENCY_EDGES) - 1)]
        return LATENCY_EDGES[-1]


def wilson(clicks: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion clicks / n (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = clicks / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _two_proportion_p(c1: int, n1: int, c2: int, n2: int) -> float | None:
    """Two-sided p-value of a difference between two proportions (pooled z-test)."""
    if not n1 or not n2:
        return None
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 1.0 if se == 0 else math.erfc(abs(c1 / n1 - c2 / n2) / se / math.sqrt(2))


def arm_figures(tallies: dict[str, ArmTally], cpu_cost_per_hour: float | None = None) -> dict[str, dict]:
    """Per arm (the first: the control): CTR with its 95% interval, lift over the control and its
    p-value, latency p50/p99 (ms), CPU ms per request (scoring, and with following the registry),
    and, given a price per CPU-hour, the cost of a million requests."""
    control = next(iter(tallies.values()), None)
    out = {}
    for name, t in tallies.items():
        ctr = t.clicks / t.labelled if t.labelled else None
        low, high = wilson(t.clicks, t.labelled)
        base = control.clicks / control.labelled if control is not None and control.labelled else None
        cpu_per_request = (t.cpu_seconds + t.sync_cpu_seconds) / t.requests if t.requests else None
        out[name] = {
            "version": t.version, "requests": t.requests, "labelled": t.labelled, "clicks": t.clicks,
            "ctr": ctr, "ctr_low": low if t.labelled else None, "ctr_high": high if t.labelled else None,
            "lift": None if ctr is None or not base else ctr / base - 1,
            "p_value": None if t is control else _two_proportion_p(t.clicks, t.labelled, control.clicks,
                                                                    control.labelled),
            "p50_ms": None if t.requests == 0 else 1e3 * t.percentile(0.5),
            "p99_ms": None if t.requests == 0 else 1e3 * t.percentile(0.99),
            "mean_ms": 1e3 * t.seconds / t.requests if t.requests else None,
            "cpu_ms_per_request": None if cpu_per_request is None else 1e3 * t.cpu_seconds / t.requests,
            "cpu_ms_per_request_with_sync": None if cpu_per_request is None else 1e3 * cpu_per_request,
            "cost_per_million_requests": None if cpu_per_request is None or cpu_cost_per_hour is None
            else cpu_per_request * 1e6 * cpu_cost_per_hour / 3600,
        }
    return out


class Splitter:
    """Buckets users into arms by `traffic` shares: a salted 64-bit hash of the id's text (7 and "7"
    are one user), so a user meets the same arm in every process and every run with that salt."""

    def __init__(self, names: tuple[str, ...], traffic: tuple[float, ...], salt: str) -> None:
        self.names, self._salt = names, salt.encode() + b"\x00"
        cumulative, total = [], 0.0
        for share in traffic[:-1]:
            total += share
            cumulative.append(int(total * 2 ** 64))
        self._bounds = cumulative

    def arm_of(self, user: str | int) -> str:
        digest = hashlib.blake2b(self._salt + str(user).encode(), digest_size=8).digest()
        return self.names[bisect.bisect_right(self._bounds, int.from_bytes(digest, "little"))]


class Experiment:
    """The arms of one server: their services, the splitter and the tallies (see the module docstring).

    `Experiment.open(config, base)` builds the arms around `base`, the server's own service."""

    def __init__(self, config: ExperimentSection, services: dict[str, ModelService]) -> None:
        self.config = config
        self.services = services
        self.splitter = Splitter(tuple(services), tuple(a.traffic for a in config.arms), config.salt)
        self.tallies = {name: ArmTally() for name in services}

    @classmethod
    def open(cls, config: ExperimentSection, base: ModelService) -> Experiment:
        """The arms of `config` beside `base` (a server following a registry): an arm that follows
        it as `base` does is served by `base`; the others get a service of their own."""
        if base.registry is None or not base.pinnable:
            raise ValueError("experiment.arms: a server attached to shared tables holds one model; "
                             "serve arms from a registry (--registry)")
        services = {}
        for arm in config.arms:
            if arm.registry is None and arm.follow == "latest" and (arm.blend or base.offline is None):
                services[arm.name] = base
            else:
                services[arm.name] = ModelService(
                    ModelRegistry(arm.registry) if arm.registry is not None else base.registry, sink=base.sink,
                    candidates=base.candidate_config, drain_timeout=base.drain_timeout,
                    offline=base.offline if arm.blend else None, follow=arm.follow, hold=arm.version)
        return cls(config, services)

    def route(self, user: str | int) -> tuple[str, ModelService, ArmTally]:
        """The arm of `user`: its name, service and tally."""
        name = self.splitter.arm_of(user)
        return name, self.services[name], self.tallies[name]

    def followers(self) -> list[ModelService]:
        """The distinct services that follow a registry (each needs its follower thread)."""
        return list({id(s): s for s in self.services.values()}.values())

    @property
    def ready(self) -> bool:
        return all(service.version is not None for service in self.services.values())

    def attribute(self, users_arms_labels: Iterable[tuple[str | int, str | None, float]]) -> None:
        """Count labelled events: each (user, arm named by the client or None, label)."""
        by_arm: dict[str, list[float]] = {}
        for user, arm, label in users_arms_labels:
            by_arm.setdefault(arm if arm is not None else self.splitter.arm_of(user), []).append(label)
        for arm, labels in by_arm.items():
            self.tallies[arm].record_events(labels)

    def unknown_arm(self, arms: Iterable[str | None]) -> str | None:
        """The first arm named that this experiment does not have (None: all known)."""
        return next((arm for arm in arms if arm is not None and arm not in self.services), None)

    def current(self) -> dict[str, ArmTally]:
        """The tallies with each arm's served version and its registry-following CPU time now."""
        for name, tally in self.tallies.items():
            service = self.services[name]
            tally.version = service.version
            shared = sum(1 for s in self.services.values() if s is service)   # a shared follower's CPU, split
            tally.sync_cpu_seconds = service.sync_cpu_seconds / shared
        return self.tallies

    def collect(self):
        """Prometheus families (a custom collector of the serving registry): per arm, requests,
        labelled events, clicks, latency and the served version."""
        requests = CounterMetricFamily("freshrec_arm_requests", "Requests answered per arm", labels=["arm"])
        labelled = CounterMetricFamily("freshrec_arm_labelled_events", "Labelled events attributed per arm",
                                       labels=["arm"])
        clicks = CounterMetricFamily("freshrec_arm_clicks", "Positive events attributed per arm", labels=["arm"])
        version = GaugeMetricFamily("freshrec_arm_model_version", "Version each arm serves", labels=["arm"])
        latency = HistogramMetricFamily("freshrec_arm_request_seconds", "Scoring latency per arm", labels=["arm"])
        for name, t in self.current().items():
            requests.add_metric([name], t.requests)
            labelled.add_metric([name], t.labelled)
            clicks.add_metric([name], t.clicks)
            if t.version is not None:
                version.add_metric([name], t.version)
            cumulative, buckets = 0, []
            for edge, count in zip((*LATENCY_EDGES[::10], math.inf), _decades(t.latency)):
                cumulative += count
                buckets.append((f"{edge:g}" if edge != math.inf else "+Inf", cumulative))
            latency.add_metric([name], buckets, t.seconds)
        return [requests, labelled, clicks, version, latency]


def _decades(latency: list[int]) -> list[int]:
    """The bucket counts summed per decade (edges 10 µs, 100 µs ... 10 s, then above)."""
    counts = [latency[0]] + [sum(latency[1 + 10 * d:11 + 10 * d]) for d in range(6)]
    return counts + [latency[-1]]


class ArmsLog:
    """Where one server process writes its arms' tallies: `DIR/arms-<host>-<pid>.json`, replaced
    whole each time; `read(DIR)` merges every process's file."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"arms-{socket.gethostname()}-{os.getpid()}.json"

    def write(self, tallies: dict[str, ArmTally]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({name: t.to_dict() for name, t in tallies.items()}))
        os.replace(temporary, self.path)

    @staticmethod
    def read(directory: Path) -> dict[str, ArmTally]:
        """The tallies of every process that wrote to `directory`, added up per arm (in the order the
        first file names them); ValueError when there are none or a file is not a tally file."""
        merged: dict[str, ArmTally] = {}
        files = sorted(directory.glob("arms-*.json"))
        if not files:
            raise ValueError(f"{directory}: no arms-*.json (is experiment.log this directory?)")
        for path in files:
            try:
                data = json.loads(path.read_text())
                tallies = {name: ArmTally.from_dict(t) for name, t in data.items()}
            except (json.JSONDecodeError, AttributeError, ValueError) as error:
                raise ValueError(f"{path}: {error}") from None
            for name, tally in tallies.items():
                merged[name] = merged[name].merge(tally) if name in merged else tally
        return merged
