"""The federated server: a Flower `ServerApp` whose rounds run SecAgg+ and a strategy over the sums.

`SecureRounds` wraps one of Flower's strategies (FedAvg, or FedAdam: an adaptive server optimizer) as
Flower's own differential-privacy wrappers do. It gives each round its window of event time, samples
every client in the last round (so that no client's last events go unscored), and turns what SecAgg+
recovers - the mean of the clients' packed vectors, never one of them - into sums (`Update.unpack`)
and the sums into one step of the global arrays: without differential privacy each catalogue row
moves by the mean update of the clients that learned it and the dense arrays by the mean over the
round's clients; with it, every array moves by the sum of the clipped updates over the number of
sampled clients plus Gaussian noise of deviation noise x clip / sampled (Flower's central-DP noise,
added after aggregation: the server only ever holds the sum). The wrapped strategy takes that step
(FedAvg as it is, FedAdam through its moments). Each round leaves a `RoundRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import FedAdam, FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import ServerApp
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv

from freshrec.federated.config import STRATEGIES
from freshrec.federated.space import BINS, Update
from freshrec.metrics.streaming import Tally

__all__ = ["Noise", "RoundRecord", "SecureRounds", "inner_strategy", "run_rounds", "secagg_workflow", "server_app"]


@dataclass(frozen=True)
class Noise:
    """Differential privacy of the clients' updates: each clipped to L2 norm `clip` on its client,
    Gaussian noise of deviation `multiplier` x `clip` added to their sum."""

    multiplier: float
    clip: float


@dataclass
class RoundRecord:
    """A round: the clients sampled and those whose masked updates arrived (the others dropped out and
    SecAgg+ removed their masks), the summed score histogram of the evaluation events they learned,
    the L2 norm of the step the global arrays took and why clients did not answer (`failures`)."""

    round: int
    sampled: int
    answered: int
    tally: Tally
    step_norm: float
    failures: tuple[str, ...] = ()

    @property
    def halted(self) -> bool:
        """SecAgg+ gave the round up (too many of a client's neighbours dropped out to rebuild its
        masks): the global arrays did not move and the round's evaluation scores are lost."""
        return self.answered == 0

    def to_json(self) -> dict:
        return {"round": self.round, "sampled": self.sampled, "answered": self.answered,
                "dropped": None if self.halted else self.sampled - self.answered, "halted": self.halted,
                "evaluation_rows": self.tally.rows, "step_norm": self.step_norm, "failures": list(self.failures)}


@dataclass
class SecureRounds(Strategy):
    """`inner` (a Flower strategy whose initial parameters are the global arrays) over packed secure
    sums: `windows[r - 1]` = (start, end) event time of round r, `eval_from` where the evaluation part
    of the stream starts, `tables` the number of catalogue arrays, `noise` differential privacy (None:
    off), `audit` a folder for the recovered sums, `on_round` called with each round's record."""

    inner: FedAvg
    initial: list[np.ndarray]
    windows: Sequence[tuple[float, float]]
    eval_from: float
    tables: int
    noise: Noise | None = None
    audit: Path | None = None
    on_round: Callable[[RoundRecord], None] | None = None
    records: list[RoundRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = [np.asarray(a, np.float64) for a in self.initial]
        self._sampled: dict[int, int] = {}

    def fit_config(self, server_round: int) -> dict:
        start, end = self.windows[server_round - 1]
        return {"window_start": start, "window_end": end, "eval_from": self.eval_from, "round": server_round}

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters(self.current)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        self._close_halted(server_round - 1)
        client_manager.wait_for(self.inner.min_available_clients)   # every client known before sampling
        if server_round == len(self.windows):
            fit_ins = FitIns(parameters, self.fit_config(server_round))
            chosen = [(proxy, fit_ins) for proxy in client_manager.all().values()]
        else:
            chosen = self.inner.configure_fit(server_round, parameters, client_manager)
        self._sampled[server_round] = len(chosen)
        return chosen

    def aggregate_fit(self, server_round: int, results, failures):
        if not results:
            return None, {}
        answered, sampled = len(results), self._sampled[server_round]
        sums = [a * answered for a in parameters_to_ndarrays(results[0][1].parameters)]  # SecAgg+ gave the mean
        update = Update.unpack(sums, len(self.current), 0 if self.noise else self.tables)
        step = self._step(update, answered, sampled)
        moved = ndarrays_to_parameters([c + s for c, s in zip(self.current, step)])
        proposal = FitRes(Status(Code.OK, ""), moved, 1, {})
        parameters, _ = self.inner.aggregate_fit(server_round, [(results[0][0], proposal)], [])
        new = parameters_to_ndarrays(parameters)
        norm = float(np.sqrt(sum(float(np.sum((n - c) ** 2)) for n, c in zip(new, self.current))))
        self.current = [np.asarray(a, np.float64) for a in new]
        self._record(RoundRecord(server_round, sampled, answered, update.tally, norm,
                                 tuple(str(f)[:300] for f in failures)))
        if self.audit is not None:
            np.savez(self.audit / f"server-round-{server_round}-sums.npz", **{str(i): a for i, a in enumerate(sums)})
        return parameters, {}

    def _close_halted(self, server_round: int) -> None:
        """Record round `server_round` as halted if it was configured and never aggregated."""
        if server_round in self._sampled and (not self.records or self.records[-1].round < server_round):
            self._record(RoundRecord(server_round, self._sampled[server_round], 0, Tally.zeros(BINS), 0.0))

    def _record(self, record: RoundRecord) -> None:
        self.records.append(record)
        if self.on_round is not None:
            self.on_round(record)

    def finish(self) -> list[RoundRecord]:
        """Every round's record, the last one's too if SecAgg+ halted it."""
        self._close_halted(len(self.windows))
        return self.records

    def _step(self, update: Update, answered: int, sampled: int) -> list[np.ndarray]:
        if self.noise is not None:
            step = [d / sampled for d in update.delta]
            add_gaussian_noise_inplace(step, compute_stdv(self.noise.multiplier, self.noise.clip, sampled))
            return step
        rows = [d / np.maximum(t, 1.0)[:, None] for d, t in zip(update.delta, update.touched)]
        return rows + [d / answered for d in update.delta[self.tables:]]

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []   # the clients score every event before learning it, in fit

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def inner_strategy(name: str, initial: list[np.ndarray], clients: int, fraction: float,
                   fit_config: Callable[[int], dict], server_lr: float, tau: float) -> FedAvg:
    """Flower's FedAvg or FedAdam sampling `fraction` of `clients` a round, from `initial`."""
    common = {"fraction_fit": fraction, "fraction_evaluate": 0.0, "min_fit_clients": min(2, clients),
              "min_evaluate_clients": 0, "min_available_clients": clients, "on_fit_config_fn": fit_config,
              "initial_parameters": ndarrays_to_parameters(initial)}
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedadam":
        return FedAdam(**common, eta=server_lr, eta_l=server_lr, tau=tau)
    raise ValueError(f"strategy {name!r} is not one of {STRATEGIES}")


def secagg_workflow(sampled: int, clients: int) -> SecAggPlusWorkflow:
    """SecAgg+ for rounds of at least `sampled` of `clients`: each client's secrets shared with up to
    7 neighbours, a majority of them needed to rebuild a dropped client's masks; every client weighs
    1 (the server does not learn how many events a client holds); values in [-8, 8] quantized into
    the largest power-of-two range whose sum over every client stays below the 2**32 modulus."""
    shares = min(max(sampled, 3), 7)
    shares -= 1 - shares % 2                              # odd, as the protocol prefers
    quantization = 1 << int(np.floor(np.log2((1 << 32) / (clients + 1))))
    return SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=shares // 2 + 1, max_weight=1.0,
                              clipping_range=8.0, quantization_range=quantization)


def run_rounds(grid, context, strategy: SecureRounds, workflow: SecAggPlusWorkflow) -> list[RoundRecord]:
    """`strategy`'s rounds on `grid` (Flower's default workflow, its fit stage `workflow`); returns
    every round's record."""
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=len(strategy.windows)), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    return strategy.finish()


def server_app(strategy: SecureRounds, workflow: SecAggPlusWorkflow) -> ServerApp:
    """The simulation's `ServerApp`: `run_rounds` for `strategy` (whose records the caller reads)."""
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        run_rounds(grid, context, strategy, workflow)

    return app
