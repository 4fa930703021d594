"""Online models over dynamic embedding tables: `forward(batch, train) -> logits`; no training code. The
ranking models (`MODELS`) and the two-tower retrieval model."""

from freshrec.models.base import ModelConfig, OnlineModel, loss
from freshrec.models.dcn import DCNConfig, DCNv2
from freshrec.models.deepfm import DeepFM, DeepFMConfig
from freshrec.models.factory import MODELS, build_model
from freshrec.models.fm import FMConfig, OnlineFM
from freshrec.models.lr import LogisticRegression, LRConfig
from freshrec.models.two_tower import TwoTower, TwoTowerConfig

__all__ = ["MODELS", "DCNConfig", "DCNv2", "DeepFM", "DeepFMConfig", "FMConfig", "LRConfig",
           "LogisticRegression", "ModelConfig", "OnlineFM", "OnlineModel", "TwoTower", "TwoTowerConfig",
           "build_model", "loss"]
