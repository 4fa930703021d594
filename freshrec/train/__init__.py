"""Training: `OnlineTrainer` (predict-then-learn, prequential metrics) and the River face;
`OfflineTrainer` (full retraining over a range, holdout, early stopping) and its `OfflineRunner`."""

from freshrec.train.offline import OfflineConfig, OfflineResult, OfflineRunner, OfflineTrainer, copy_model
from freshrec.train.online import OnlineTrainer, TrainerConfig

__all__ = ["OfflineConfig", "OfflineResult", "OfflineRunner", "OfflineTrainer", "OnlineTrainer", "TrainerConfig",
           "copy_model"]
