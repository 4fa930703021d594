"""Training: `OnlineTrainer` (predict-then-learn, prequential metrics; `learn_stream` over `Unit`s
with the fused FM/LR step `FusedStep`, a chunk of micro-batches per call, and its id lookahead) and
the River face;
`OfflineTrainer` (full retraining over a range, holdout, early stopping) and its `OfflineRunner`."""

from freshrec.train.offline import OfflineConfig, OfflineResult, OfflineRunner, OfflineTrainer, copy_model
from freshrec.train.online import OnlineTrainer, TrainerConfig, Unit

__all__ = ["OfflineConfig", "OfflineResult", "OfflineRunner", "OfflineTrainer", "OnlineTrainer", "TrainerConfig",
           "Unit", "copy_model"]
