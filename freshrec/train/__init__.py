"""Training: `OnlineTrainer` (predict-then-learn, prequential metrics) and the River face."""

from freshrec.train.online import OnlineTrainer, TrainerConfig

__all__ = ["OnlineTrainer", "TrainerConfig"]
