"""Fusion of the online and the offline model: `HedgeFusion` blends their predictions with weights
that follow recent loss; `rebase` warm-starts the online model from the offline one."""

from freshrec.fusion.config import STRATEGIES, FusionConfig
from freshrec.fusion.hedge import HISTORY_POINTS, HedgeFusion
from freshrec.fusion.rebase import rebase

__all__ = ["HISTORY_POINTS", "STRATEGIES", "FusionConfig", "HedgeFusion", "rebase"]
