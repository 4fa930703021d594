"""`FederatedTrainer`: a recommender trained by clients that keep their users' events, on Flower.

The stream's users are split into `clients` disjoint groups (a stable hash of the user id), each
group's events written where its client reads them. The stream's event time is cut into `rounds`
windows of equal numbers of events; in round r the sampled clients learn their events up to the end
of window r with freshrec's online trainer and the server combines their updates of the shared arrays
with SecAgg+ (`freshrec.federated.server`), so that it never sees one client's update. Flower's
simulation runs the clients, several at a time, on one machine.

The figure to compare is prequential: every event is scored by its client's model before that model
learns it, and the scores of the last `holdout` of the stream (time order) are summed, securely, into
one histogram; central online training (`freshrec.automl.objective.prequential`, the product's loop
on the whole stream) is scored on the same events in the same way. With `noise`, the updates are
clipped and noised (differential privacy at the level of a client's whole update) and the privacy
budget spent (epsilon at `delta`) is reported by Opacus' RDP accountant for the sampled Gaussian
mechanism, composed over the rounds.

>>> config = FederatedConfig(clients=3, rounds=2)
>>> config.clients, config.strategy
(3, 'fedavg')
>>> FederatedConfig(fraction=0.0)
Traceback (most recent call last):
...
ValueError: fraction: must be in (0, 1], not 0.0
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from flwr.simulation import run_simulation
from opacus.accountants import RDPAccountant

from freshrec._hashing import field_salt, hash_values
from freshrec.automl.objective import prequential
from freshrec.automl.stream import Stream
from freshrec.config import FreshrecConfig, with_overrides
from freshrec.engine.build import feature_specs, model_config
from freshrec.events.event import EventChunk
from freshrec.features import FeaturePipeline
from freshrec.federated.client import DROPPED_OUT, ClientSetup, client_app
from freshrec.federated.server import (
    STRATEGIES,
    Noise,
    RoundRecord,
    SecureRounds,
    inner_strategy,
    secagg_workflow,
    server_app,
)
from freshrec.federated.space import BINS, SharedSpace
from freshrec.metrics import PrequentialMetrics
from freshrec.metrics.streaming import Tally, auc
from freshrec.models import build_model

__all__ = ["FederatedConfig", "FederatedResult", "FederatedTrainer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederatedConfig:
    """- `clients`: how many clients the users are split into; `rounds`: windows of event time, one
      round each;
    - `fraction`: the share of clients sampled a round (the last round samples every client);
    - `strategy`: "fedavg" or "fedadam" (Flower's, with `server_lr` and `tau`);
    - `noise`: the Gaussian noise multiplier of differential privacy (None: off), `clip` the L2 norm each
      client's update is clipped to, `delta` the delta epsilon is reported at;
    - `dropout`: the probability that a sampled client vanishes mid-round (simulated; SecAgg+ recovers);
    - `holdout`: the last share of the stream the comparison is made on; `seed`: of the simulated
      dropouts; `workers`: clients trained at once (default: the CPU cores)."""

    clients: int = 20
    rounds: int = 30
    fraction: float = 1.0
    strategy: str = "fedavg"
    server_lr: float = 0.1
    tau: float = 0.01
    noise: float | None = None
    clip: float = 1.0
    delta: float = 1e-5
    dropout: float = 0.0
    holdout: float = 0.2
    seed: int = 0
    workers: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "clients": (self.clients >= 2, "must be >= 2 (secure aggregation needs two clients)"),
            "rounds": (self.rounds >= 1, "must be >= 1"),
            "fraction": (0 < self.fraction <= 1, "must be in (0, 1]"),
            "strategy": (self.strategy in STRATEGIES, f"must be one of {STRATEGIES}"),
            "server_lr": (self.server_lr > 0, "must be > 0"),
            "tau": (self.tau > 0, "must be > 0"),
            "noise": (self.noise is None or self.noise > 0, "must be > 0 (or None: no differential privacy)"),
            "clip": (self.clip > 0, "must be > 0"),
            "delta": (0 < self.delta < 1, "must be in (0, 1)"),
            "dropout": (0 <= self.dropout < 1, "must be in [0, 1)"),
            "holdout": (0 < self.holdout < 1, "must be in (0, 1)"),
            "workers": (self.workers is None or self.workers >= 1, "must be >= 1"),
        }
        for name, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"{name}: {rule}, not {getattr(self, name)!r}")

    @property
    def sampled(self) -> int:
        """Clients sampled in a round before the last (as Flower's FedAvg counts them)."""
        return max(int(self.clients * self.fraction), 2)


@dataclass
class FederatedResult:
    """The federated model's and central online training's figures on the evaluation events
    (`Tally.report()` dicts; `central["auc_exact"]` is central's exact AUC), the AUC gap (central minus
    federated), epsilon (None without differential privacy) and the rounds."""

    federated: dict
    central: dict
    gap: float | None
    epsilon: float | None
    config: FederatedConfig
    rounds: list[dict]
    shared_rows: int

    def to_json(self) -> dict:
        return {"federated": self.federated, "central": self.central, "auc_gap": self.gap, "epsilon": self.epsilon,
                "delta": self.config.delta if self.config.noise else None, "config": asdict(self.config),
                "shared_rows": self.shared_rows, "rounds": self.rounds}


class FederatedTrainer:
    """Federated training of `settings`' model (see the module docstring) as `config` says.

    >>> from freshrec.config import parse_config
    >>> trainer = FederatedTrainer(parse_config({"model": {"name": "fm", "dim": 4}}), FederatedConfig(clients=2))
    >>> trainer.config.rounds
    30
    """

    def __init__(self, settings: FreshrecConfig, config: FederatedConfig | None = None) -> None:
        self.settings = with_overrides(settings, {"fusion.strategy": "none"})   # online learning only
        self.config = config or FederatedConfig()

    def run(self, stream: Stream, audit: Path | None = None, progress: Callable[[RoundRecord], None] | None = None,
            workdir: Path | None = None) -> FederatedResult:
        """Train on `stream` (in time order) and compare with central online training on it; with
        `audit`, write what each client produced and sent and what the server recovered there;
        `progress` gets each round's record as it ends."""
        with tempfile.TemporaryDirectory(prefix="freshrec-federated-", dir=workdir) as scratch:
            return self._run(stream, Path(scratch), audit, progress)

    def _run(self, stream: Stream, scratch: Path, audit: Path | None, progress) -> FederatedResult:
        c, settings = self.config, self.settings
        specs = feature_specs(settings, stream.fields)
        whole = FeaturePipeline(specs, settings.features.target).build(_chunk(stream))
        space = SharedSpace.of(whole, specs, stream.fields)
        self._split(stream, scratch)
        ts = stream.table.column("ts").to_numpy().astype(np.float64)
        windows = _windows(ts, c.rounds)
        eval_from = float(ts[min(int(len(ts) * (1 - c.holdout)), len(ts) - 1)])
        initial = space.initial(build_model(settings.model.name, specs, model_config(settings)))
        noise = Noise(c.noise, c.clip) if c.noise is not None else None
        strategy = SecureRounds(None, initial, windows, eval_from, len(space.catalogue), noise, audit, progress)
        strategy.inner = inner_strategy(c.strategy, initial, c.clients, c.fraction, strategy.fit_config,
                                        c.server_lr, c.tau)
        if audit is not None:
            audit.mkdir(parents=True, exist_ok=True)
        setup = ClientSetup(settings, scratch, space, c.clip if noise else None,
                            audit=audit.resolve() if audit is not None else None)
        workers = c.workers or os.cpu_count() or 1
        _quiet_flower(c.dropout > 0)
        run_simulation(server_app(strategy, secagg_workflow(c.sampled, c.clients)),
                       client_app(setup, c.dropout, c.seed), num_supernodes=c.clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": workers, "log_to_driver": False,
                                                     "include_dashboard": False, "_temp_dir": str(scratch / "ray")}})
        records = strategy.finish()
        if len(records) < c.rounds:
            raise RuntimeError(f"federated training stopped after {len(records)} of {c.rounds} rounds")
        federated = Tally.zeros(BINS)
        for record in records:
            federated.add(record.tally)
        central = self._central(stream, eval_from)
        fed, cen = federated.report(), central
        gap = cen["auc"] - fed["auc"] if fed["auc"] is not None and cen["auc"] is not None else None
        return FederatedResult(fed, cen, gap, self._epsilon(records) if noise else None, c,
                               [r.to_json() for r in records], sum(len(i) for i in space.catalogue.values()))

    def _split(self, stream: Stream, folder: Path) -> None:
        """Write each client's events (its users': a stable hash of the user id) to `folder`/<k>.arrow."""
        users = [f.name for f in stream.fields if f.owner == "user"]
        if not users:
            raise ValueError(f"{stream.name}: no user-owned field to split the stream's events by")
        column = stream.table.column(users[0])
        part = hash_values(column, field_salt(users[0])) % self.config.clients   # ids are positive int64
        for k in range(self.config.clients):
            mine = np.flatnonzero(part == k)
            Stream(stream.table.take(pa.array(mine)), stream.positions[mine], stream.fields,
                   stream.name).save(folder / f"{k}.arrow")

    def _central(self, stream: Stream, eval_from: float) -> dict:
        """Central online training on the whole stream, scored on the evaluation events."""
        scored = prequential(self.settings, stream)
        late = stream.table.column("ts").to_numpy() >= eval_from
        metrics = PrequentialMetrics(bins=BINS, window_events=None)
        metrics.update(scored.scores[late], scored.labels[late])
        exact = auc(scored.scores[late], scored.labels[late])
        return {**metrics.total.report(), "auc_exact": None if math.isnan(exact) else exact}

    def _epsilon(self, records) -> float:
        accountant = RDPAccountant()
        for record in records:
            accountant.step(noise_multiplier=self.config.noise, sample_rate=record.sampled / self.config.clients)
        return float(accountant.get_epsilon(delta=self.config.delta))


def _chunk(stream: Stream):
    return EventChunk(stream.table, stream.positions, stream.name)


def _windows(ts: np.ndarray, rounds: int) -> list[tuple[float, float]]:
    """`rounds` windows [start, end) of event time holding about equal numbers of the events."""
    cuts = [float(ts[min(len(ts) * r // rounds, len(ts) - 1)]) for r in range(1, rounds)]
    bounds = [float(ts[0])] + cuts + [float(ts[-1]) + 1.0]
    return list(zip(bounds[:-1], bounds[1:]))


class _SimulatedDropouts(logging.Filter):
    """Hides what Flower logs for the dropouts `dropout_mod` simulates (they are the point): their
    tracebacks and the line before each."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return DROPPED_OUT not in message and not message.startswith("An exception was raised when processing")


def _quiet_flower(dropouts: bool) -> None:
    """Flower's log to errors only (its per-round lines and its notice that `run_simulation` will give
    way to `flwr run`: a run here is one Python call), simulated dropouts hidden; Ray's accelerator
    notice off."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.ERROR)
    for old in [f for f in flower.filters if isinstance(f, _SimulatedDropouts)]:
        flower.removeFilter(old)
    if dropouts:
        flower.addFilter(_SimulatedDropouts())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

