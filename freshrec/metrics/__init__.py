"""Metrics: prequential AUC, logloss, normalized entropy and calibration in bounded memory."""

from freshrec.metrics.streaming import PrequentialMetrics, auc, logloss

__all__ = ["PrequentialMetrics", "auc", "logloss"]
