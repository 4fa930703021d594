"""`Plan`: what a federation is given before its first round, made once from the stream, and what
turns the rounds' records into a `FederatedResult`.

The server gets the catalogue (`SharedSpace`), the rounds' windows of event time, where the
evaluation part starts, the initial global arrays and central online training's figures on the
evaluation events (the comparison); every client gets the run's settings and the catalogue, and
reads its own events. `save`/`load` write and read it as a folder, for a deployment where the
server and the clients are other processes (`freshrec.federated.deploy`).

>>> from freshrec.automl.stream import Stream
>>> from freshrec.config import parse_config
>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> stream = Stream.read(Simulator(SimulatorConfig(total_events=1000, batch_size=500)))
>>> plan = Plan.make(parse_config({"model": {"dim": 4}}), FederatedConfig(clients=2, rounds=4), stream)
>>> len(plan.windows), plan.central["rows"]
(4, 200)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from opacus.accountants import RDPAccountant

from freshrec.automl.objective import prequential
from freshrec.automl.stream import Stream
from freshrec.config import FreshrecConfig, parse_config
from freshrec.engine.build import feature_specs, model_config
from freshrec.events.event import EventChunk
from freshrec.features import FeaturePipeline
from freshrec.federated.client import ClientSetup
from freshrec.federated.config import FederatedConfig, FederatedResult
from freshrec.federated.server import Noise, RoundRecord, SecureRounds, inner_strategy, secagg_workflow
from freshrec.federated.space import BINS, SharedSpace
from freshrec.metrics import PrequentialMetrics
from freshrec.metrics.streaming import Tally, auc
from freshrec.models import build_model

__all__ = ["Plan"]


@dataclass
class Plan:
    """A federation's start (see the module docstring)."""

    settings: FreshrecConfig
    config: FederatedConfig
    space: SharedSpace
    windows: list[tuple[float, float]]
    eval_from: float
    initial: list[np.ndarray]
    central: dict

    @classmethod
    def make(cls, settings: FreshrecConfig, config: FederatedConfig, stream: Stream) -> Plan:
        """The plan of `stream` (in time order): its catalogue, `config.rounds` windows of about equal
        numbers of events, the evaluation part (the last `config.holdout`), central training's figures."""
        specs = feature_specs(settings, stream.fields)
        whole = FeaturePipeline(specs, settings.features.target).build(
            EventChunk(stream.table, stream.positions, stream.name))
        space = SharedSpace.of(whole, specs, stream.fields)
        ts = stream.table.column("ts").to_numpy().astype(np.float64)
        eval_from = float(ts[min(int(len(ts) * (1 - config.holdout)), len(ts) - 1)])
        initial = space.initial(build_model(settings.model.name, specs, model_config(settings)))
        return cls(settings, config, space, windows(ts, config.rounds), eval_from, initial,
                   central(settings, stream, eval_from))

    def strategy(self, audit: Path | None = None,
                 progress: Callable[[RoundRecord], None] | None = None) -> SecureRounds:
        """The server's strategy for these rounds."""
        c = self.config
        noise = Noise(c.noise, c.clip) if c.noise is not None else None
        rounds = SecureRounds(None, self.initial, self.windows, self.eval_from, len(self.space.catalogue), noise,
                              audit, progress)
        rounds.inner = inner_strategy(c.strategy, self.initial, c.clients, c.fraction, rounds.fit_config,
                                      c.server_lr, c.tau)
        return rounds

    def workflow(self):
        """SecAgg+ for these rounds."""
        return secagg_workflow(self.config.sampled, self.config.clients)

    def setup(self, audit: Path | None = None) -> ClientSetup:
        """What every client is given."""
        clip = self.config.clip if self.config.noise is not None else None
        return ClientSetup(self.settings, self.space, clip, audit=audit.resolve() if audit is not None else None)

    def result(self, records: list[RoundRecord]) -> FederatedResult:
        """The figures of a finished federation whose rounds left `records`."""
        c = self.config
        if len(records) < c.rounds:
            raise RuntimeError(f"federated training stopped after {len(records)} of {c.rounds} rounds")
        federated = Tally.zeros(BINS)
        for record in records:
            federated.add(record.tally)
        fed = federated.report()
        gap = self.central["auc"] - fed["auc"] if fed["auc"] is not None and self.central["auc"] is not None else None
        return FederatedResult(fed, self.central, gap, epsilon(c, records) if c.noise is not None else None, c,
                               [r.to_json() for r in records],
                               sum(len(ids) for ids in self.space.catalogue.values()))

    def save(self, folder: Path) -> None:
        """Write the plan into `folder` (made if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"settings": self.settings.model_dump(mode="json"), "config": asdict(self.config),
                "windows": self.windows, "eval_from": self.eval_from, "central": self.central,
                "features": self.space.features, "private_fields": self.space.private_fields}
        (folder / "plan.json").write_text(json.dumps(meta, indent=1))
        np.savez(folder / "catalogue.npz", **self.space.catalogue)
        np.savez(folder / "initial.npz", **{str(i): a for i, a in enumerate(self.initial)})

    @classmethod
    def load(cls, folder: Path) -> Plan:
        """The plan `save` wrote into `folder`."""
        meta = json.loads((folder / "plan.json").read_text())
        with np.load(folder / "catalogue.npz") as data:
            catalogue = {key: data[key] for key in meta["features"]}
        with np.load(folder / "initial.npz") as data:
            initial = [data[str(i)] for i in range(len(data.files))]
        space = SharedSpace(catalogue, {k: tuple(v) for k, v in meta["features"].items()},
                            tuple(meta["private_fields"]))
        return cls(parse_config(meta["settings"]), FederatedConfig(**meta["config"]), space,
                   [tuple(w) for w in meta["windows"]], meta["eval_from"], initial, meta["central"])


def windows(ts: np.ndarray, rounds: int) -> list[tuple[float, float]]:
    """`rounds` windows [start, end) of event time holding about equal numbers of the events `ts`.

    >>> windows(np.arange(8.0), 4)
    [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0)]
    """
    cuts = [float(ts[min(len(ts) * r // rounds, len(ts) - 1)]) for r in range(1, rounds)]
    bounds = [float(ts[0])] + cuts + [float(ts[-1]) + 1.0]
    return list(zip(bounds[:-1], bounds[1:]))


def central(settings: FreshrecConfig, stream: Stream, eval_from: float) -> dict:
    """Central online training on the whole stream (the product's loop), scored on the events from
    `eval_from` on: `Tally.report()` with `auc_exact`."""
    scored = prequential(settings, stream)
    late = stream.table.column("ts").to_numpy() >= eval_from
    metrics = PrequentialMetrics(bins=BINS, window_events=None)
    metrics.update(scored.scores[late], scored.labels[late])
    exact = auc(scored.scores[late], scored.labels[late])
    return {**metrics.total.report(), "auc_exact": None if math.isnan(exact) else exact}


def epsilon(config: FederatedConfig, records: list[RoundRecord]) -> float:
    """The privacy budget the rounds spent, at `config.delta` (Opacus' RDP accountant, each round a
    sampled Gaussian mechanism with rate sampled / clients)."""
    accountant = RDPAccountant()
    for record in records:
        accountant.step(noise_multiplier=config.noise, sample_rate=record.sampled / config.clients)
    return float(accountant.get_epsilon(delta=config.delta))
