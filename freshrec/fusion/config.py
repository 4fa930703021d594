"""`FusionConfig`: how the online and the offline model are combined.

- "hedge": serve `HedgeFusion`'s blend of both models' probabilities (online alone until the
  first offline model exists);
- "rebase": when an offline model is ready, `rebase` the online model on it; the online model
  alone serves;
- "none": the online model alone, offline models are not used (the baseline of an A/B test).

>>> FusionConfig().hedge().window, FusionConfig(strategy="rebase").strategy
(2000, 'rebase')
>>> FusionConfig(strategy="average")
Traceback (most recent call last):
...
ValueError: fusion strategy 'average' is not one of ('hedge', 'rebase', 'none')
"""

from __future__ import annotations

from dataclasses import dataclass

from freshrec.fusion.hedge import HedgeFusion

__all__ = ["STRATEGIES", "FusionConfig"]

STRATEGIES = ("hedge", "rebase", "none")


@dataclass(frozen=True)
class FusionConfig:
    """`strategy` (one of `STRATEGIES`); `window` and `eta`: the Hedge settings (see `HedgeFusion`;
    `eta` None: Hedge's rate for the window)."""

    strategy: str = "hedge"
    window: int = 2000
    eta: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"fusion strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.window < 1 or not (self.eta is None or self.eta >= 0):
            raise ValueError(f"window must be >= 1 and eta >= 0, not {self.window} and {self.eta}")

    def hedge(self) -> HedgeFusion:
        """A `HedgeFusion` with these settings."""
        return HedgeFusion(self.window, self.eta)
