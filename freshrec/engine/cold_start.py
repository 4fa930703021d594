"""`ColdStartMetrics`: prequential metrics of the events whose item had fewer than `first` earlier events in the
stream, the items' cold start, where a model knows an item by little but its features (content features are
for this: compare runs with and without `features.content`). `freshrec run` reports them as `cold_items`.

An item's earlier events are counted in a count-min sketch of the hashed ids (fixed memory however many items
come; a count is never under the truth, so at worst a few cold events are taken for warm ones), within a chunk
in row order. Like the other prequential metrics they start empty when a run is restored.

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> cold = ColdStartMetrics(first=2)
>>> batch = Batch(SparseFeatures(["item_id"], torch.tensor([7, 7, 7, 8]), torch.ones(4, dtype=torch.int32)),
...               dense=torch.zeros(4, 0), labels=torch.tensor([1.0, 0.0, 1.0, 0.0]),
...               ts=torch.zeros(4, dtype=torch.float64))
>>> cold.update(batch, np.array([0.9, 0.2, 0.1, 0.4], np.float32))   # 7's third event is warm
>>> cold.report()["rows"], cold.report()["auc"]
(3, 1.0)
"""

from __future__ import annotations

import numpy as np

from freshrec.batch import Batch
from freshrec.embedding.admission import CountMinSketch
from freshrec.events.event import ITEM
from freshrec.metrics.streaming import PrequentialMetrics

__all__ = ["ColdStartMetrics"]


class ColdStartMetrics:
    """Metrics (`PrequentialMetrics`' summary) of the scored rows whose item (the batches' `key` feature) had
    fewer than `first` earlier events."""

    def __init__(self, first: int = 20, key: str = ITEM, width: int = 1 << 20) -> None:
        self.first, self.key = first, key
        self.sketch = CountMinSketch(width)
        self.metrics = PrequentialMetrics(window_events=None)

    def update(self, batch: Batch, scores: np.ndarray) -> None:
        """Count the batch's items and tally its cold rows' `scores` (NaN: not scored, left out)."""
        if self.key not in batch.sparse.keys():
            return
        feature = batch.sparse[self.key]
        if not bool((feature.lengths == 1).all()):
            return   # an item feature of one id a row only
        items = feature.values.numpy()
        unique, codes = np.unique(items, return_inverse=True)
        before = self.sketch.estimate(unique)[codes]
        order = np.argsort(codes, kind="stable")   # each row's rank among the chunk's rows of its item
        starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
        within = np.empty(len(items), np.int64)
        within[order] = np.arange(len(items)) - np.repeat(starts, np.diff(np.r_[starts, len(items)]))
        self.sketch.add(items)
        cold = (before + within < self.first) & ~np.isnan(scores)
        if cold.any():
            self.metrics.update(scores[cold], batch.labels.numpy()[cold])

    def report(self) -> dict:
        """`first`, and the cold rows' rows, positives, AUC, log loss... (see `Tally.report`)."""
        return {"first": self.first, **self.metrics.summary()}
