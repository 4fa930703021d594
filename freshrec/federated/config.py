"""`FederatedConfig` (a federation's settings, checked) and `FederatedResult` (its figures).

>>> config = FederatedConfig(clients=3, rounds=2)
>>> config.clients, config.strategy, config.sampled
(3, 'fedavg', 3)
>>> FederatedConfig(fraction=0.0)
Traceback (most recent call last):
...
ValueError: fraction: must be in (0, 1], not 0.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["STRATEGIES", "FederatedConfig", "FederatedResult"]

STRATEGIES = ("fedavg", "fedadam")


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


