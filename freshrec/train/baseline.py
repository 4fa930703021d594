"""`ItemRateBaseline`: the trivial model a recommender must beat, each item's running click rate,
judged prequentially beside the real one (`replay --json`: `baseline_auc`).

Each micro-batch is scored before it is counted, as the online model's are (`learn` takes a chunk
and the sizes of its micro-batches, counted in one numba pass): a row's score is its
item's clicks over its impressions so far, shrunk towards the stream's running click rate by
`prior` pseudo-impressions, `(clicks + prior * rate) / (impressions + prior)`; an item not seen
yet scores the running rate. Rows with a NaN label are scored and not counted (the metrics skip
them). Ids map to counter rows through an `IdIndex` (numba, a whole batch per call), so the
baseline costs about a microsecond a row, whatever the number of items.

>>> import numpy as np
>>> baseline = ItemRateBaseline(prior=1.0)
>>> baseline.learn(np.array([7, 7, 9]), np.array([1.0, 1.0, 0.0])).tolist()   # nothing counted yet
[0.5, 0.5, 0.5]
>>> baseline.learn(np.array([7, 9, 4]), np.array([1.0, 0.0, 0.0]), sizes=[1, 2]).round(3).tolist()
[0.867, 0.333, 0.667]
>>> baseline.report()["baseline_auc"]
0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from freshrec.batch import Batch
from freshrec.embedding.index import IdIndex, first_occurrences
from freshrec.events.event import ITEM
from freshrec.metrics import PrequentialMetrics

__all__ = ["NO_ITEM", "ItemRateBaseline"]

NO_ITEM = 1   # the id that rows without an item count under (hashed ids are large)


@numba.njit(nogil=True, cache=True)
def _score_then_count(rows, labels, sizes, clicks, impressions, total, prior, scores):
    """Each micro-batch of `sizes` rows scored, then counted."""
    first = 0
    for size in sizes:
        rate = total[0] / total[1]
        for i in range(first, first + size):
            scores[i] = (clicks[rows[i]] + prior * rate) / (impressions[rows[i]] + prior)
        for i in range(first, first + size):
            if not np.isnan(labels[i]):
                clicks[rows[i]] += labels[i]
                impressions[rows[i]] += 1.0
                total[0] += labels[i]
                total[1] += 1.0
        first += size


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

    def learn(self, items: np.ndarray, labels: np.ndarray, sizes: Sequence[int] | None = None) -> np.ndarray:
        """Score the micro-batches of `sizes` rows (None: one) of a chunk (`items`: positive int64
        ids, `labels`: 0, 1 or NaN), each before it is counted; record the scores in `metrics`;
        returns them."""
        items, labels = np.asarray(items, np.int64), np.ascontiguousarray(labels, np.float64)
        if items.shape != labels.shape:
            raise ValueError(f"{len(items)} items for {len(labels)} labels")
        sizes = np.array([len(items)] if sizes is None else sizes, np.int64)
        if sizes.sum() != len(items):
            raise ValueError(f"micro-batches of {sizes.sum()} rows for {len(items)} items")
        scores = np.empty(len(items))
        _score_then_count(self._rows_of(items), labels, sizes, self._clicks, self._impressions, self._total,
                          float(self.prior), scores)
        self.metrics.update(scores, labels)
        return scores

    def learn_batch(self, batch: Batch, sizes: Sequence[int] | None = None) -> np.ndarray | None:
        """`learn` a chunk cut into micro-batches of `sizes` rows by its `item_id` feature (a row
        without exactly one item id counts under the shared id `NO_ITEM`); None, nothing learned,
        for a batch without that feature."""
        if ITEM not in batch.sparse.keys():
            return None
        ids = batch.sparse[ITEM]
        items = np.full(len(batch), NO_ITEM, np.int64)
        one = ids.lengths == 1
        items[one.numpy()] = ids.values[ids.offsets[:-1][one]].numpy()
        return self.learn(items, batch.labels.numpy(), sizes)

    def report(self) -> dict:
        """`baseline_auc` and `baseline_logloss` over every row scored; empty when none was (a
        stream without items)."""
        summary = self.metrics.summary()
        if not summary["rows"]:
            return {}
        return {"baseline_auc": summary["auc"], "baseline_logloss": summary["logloss"]}

    def _rows_of(self, items: np.ndarray) -> np.ndarray:
        """The counter row of each item, new items given the next rows."""
        unique, inverse = first_occurrences(items)
        rows = self._rows.lookup(unique)
        if (new := rows < 0).any():
            rows[new] = len(self._rows) + np.arange(int(new.sum()))   # rows are never freed: 0 .. items - 1
            self._rows.insert(unique[new], rows[new])
            if (items := len(self._rows)) > len(self._clicks):
                more = np.zeros((1 << (items - 1).bit_length()) - len(self._clicks))
                self._clicks = np.concatenate([self._clicks, more])
                self._impressions = np.concatenate([self._impressions, more])
        return rows[inverse]
