"""`ItemRateBaseline`: the trivial model a recommender must beat, each item's running click rate,
judged prequentially beside the real one (`replay --json`: `baseline_auc`).

Each micro-batch is scored before it is counted, as the online model's are: a row's score is its
item's clicks over its impressions so far, shrunk towards the stream's running click rate by
`prior` pseudo-impressions, `(clicks + prior * rate) / (impressions + prior)`; an item not seen
yet scores the running rate. Rows with a NaN label are scored and not counted (the metrics skip
them). Ids map to counter rows through an `IdIndex` (numba, a whole batch per call), so the
baseline costs about a microsecond a row, whatever the number of items.

>>> import numpy as np
>>> baseline = ItemRateBaseline(prior=1.0)
>>> baseline.learn(np.array([7, 7, 9]), np.array([1.0, 1.0, 0.0])).tolist()   # nothing counted yet
[0.5, 0.5, 0.5]
>>> baseline.learn(np.array([7, 9, 4]), np.array([1.0, 0.0, 0.0])).round(3).tolist()
[0.867, 0.3, 0.6]
>>> baseline.report()["baseline_auc"]
0.6666666666666666
"""

from __future__ import annotations

import numpy as np

from freshrec.batch import Batch
from freshrec.embedding.index import IdIndex
from freshrec.events.event import ITEM
from freshrec.metrics import PrequentialMetrics

__all__ = ["NO_ITEM", "ItemRateBaseline"]

NO_ITEM = 1   # the id that rows without an item count under (hashed ids are large)


class ItemRateBaseline:
    """Each item's running click rate, shrunk towards the stream's by `prior` impressions; its
    prequential figures in `metrics`."""

    def __init__(self, prior: float = 1.0) -> None:
        if not prior > 0:
            raise ValueError(f"prior: expected a positive number of pseudo-impressions, got {prior}")
        self.prior = prior
        self.metrics = PrequentialMetrics()
        self._rows = IdIndex()
        self._clicks = np.zeros(1024)
        self._impressions = np.zeros(1024)
        self._total = np.array([1.0, 2.0])   # clicks, impressions: the running rate starts at 1/2

    def learn(self, items: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Score a micro-batch (`items`: positive int64 ids, `labels`: 0, 1 or NaN), record the
        scores in `metrics`, then count it; returns the scores."""
        items, labels = np.asarray(items, np.int64), np.asarray(labels, np.float64)
        if items.shape != labels.shape:
            raise ValueError(f"{len(items)} items for {len(labels)} labels")
        rows = self._rows_of(items)
        rate = self._total[0] / self._total[1]
        scores = (self._clicks[rows] + self.prior * rate) / (self._impressions[rows] + self.prior)
        self.metrics.update(scores, labels)
        known = ~np.isnan(labels)
        np.add.at(self._clicks, rows[known], labels[known])
        np.add.at(self._impressions, rows[known], 1.0)
        self._total += (labels[known].sum(), known.sum())
        return scores

    def learn_batch(self, batch: Batch) -> np.ndarray | None:
        """`learn` a micro-batch by its `item_id` feature (a row without exactly one item id counts
        under the shared id `NO_ITEM`); None, nothing learned, for a batch without that feature."""
        if ITEM not in batch.sparse.keys():
            return None
        ids = batch.sparse[ITEM]
        items = np.full(len(batch), NO_ITEM, np.int64)
        one = ids.lengths == 1
        items[one.numpy()] = ids.values[ids.offsets[:-1][one]].numpy()
        return self.learn(items, batch.labels.numpy())

    def report(self) -> dict:
        """`baseline_auc` and `baseline_logloss` over every row scored; empty when none was (a
        stream without items)."""
        summary = self.metrics.summary()
        if not summary["rows"]:
            return {}
        return {"baseline_auc": summary["auc"], "baseline_logloss": summary["logloss"]}

    def _rows_of(self, items: np.ndarray) -> np.ndarray:
        """The counter row of each item, new items given the next rows."""
        unique, inverse = np.unique(items, return_inverse=True)
        rows = self._rows.lookup(unique)
        if (new := rows < 0).any():
            rows[new] = len(self._rows) + np.arange(int(new.sum()))   # rows are never freed: 0 .. items - 1
            self._rows.insert(unique[new], rows[new])
            if (items := len(self._rows)) > len(self._clicks):
                more = np.zeros((1 << (items - 1).bit_length()) - len(self._clicks))
                self._clicks = np.concatenate([self._clicks, more])
                self._impressions = np.concatenate([self._impressions, more])
        return rows[inverse]
