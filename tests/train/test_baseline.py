"""The trivial baseline (`ItemRateBaseline`): each item's running click rate, scored before counted,
checked against the same rule written plainly in Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.batch import Batch
from freshrec.batch.sparse import SparseFeatures
from freshrec.metrics import auc
from freshrec.train.baseline import NO_ITEM, ItemRateBaseline


def _plain(batches: list[tuple[np.ndarray, np.ndarray]], prior: float) -> np.ndarray:
    """The rule, one dict entry per item: every row of a batch scored before the batch is counted."""
    clicks: dict[int, float] = {}
    seen: dict[int, float] = {}
    total_clicks, total = 1.0, 2.0
    scores = []
    for items, labels in batches:
        rate = total_clicks / total
        scores += [(clicks.get(i, 0.0) + prior * rate) / (seen.get(i, 0.0) + prior) for i in items.tolist()]
        for i, y in zip(items.tolist(), labels.tolist(), strict=True):
            if not np.isnan(y):
                clicks[i], seen[i] = clicks.get(i, 0.0) + y, seen.get(i, 0.0) + 1
                total_clicks, total = total_clicks + y, total + 1
    return np.array(scores)


def test_scores_match_the_plain_rule_across_growth_and_unlabelled_rows() -> None:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(40):   # 3,000 items: the counters grow past their first 1,024 rows
        items = rng.integers(1, 3_000, rng.integers(1, 200)) * 7_919 + 10**12
        labels = (rng.random(len(items)) < 0.2).astype(np.float64)
        labels[rng.random(len(items)) < 0.05] = np.nan
        batches.append((items, labels))
    baseline = ItemRateBaseline(prior=2.0)
    scores = np.concatenate([baseline.learn(items, labels) for items, labels in batches])
    np.testing.assert_allclose(scores, _plain(batches, 2.0), rtol=1e-12)
    labels = np.concatenate([labels for _, labels in batches])
    known = ~np.isnan(labels)
    assert baseline.metrics.summary()["rows"] == known.sum()
    assert baseline.report()["baseline_auc"] == pytest.approx(auc(scores[known], labels[known]), abs=2e-3)


def test_a_popular_item_outranks_an_unpopular_one() -> None:
    baseline = ItemRateBaseline()
    baseline.learn(np.array([5] * 10 + [6] * 10), np.array([1.0] * 8 + [0.0] * 2 + [1.0] + [0.0] * 9))
    hot, cold, new = baseline.learn(np.array([5, 6, 99]), np.full(3, np.nan))
    assert hot > new > cold


def _batch(keys: list[str], values: list[int], lengths: list[int], labels: list[float]) -> Batch:
    rows = len(labels)
    sparse = SparseFeatures(keys, torch.tensor(values, dtype=torch.int64), torch.tensor(lengths, dtype=torch.int32))
    return Batch(sparse, torch.zeros(rows, 0), torch.tensor(labels), torch.zeros(rows, dtype=torch.float64))


def test_a_batch_is_read_by_its_item_feature_and_rows_without_an_item_share_one_counter() -> None:
    baseline = ItemRateBaseline()
    # user_id for 3 rows, then item_id: row 1 has none
    batch = _batch(["user_id", "item_id"], [11, 12, 13, 500, 600], [1, 1, 1, 1, 0, 1], [1.0, 0.0, 1.0])
    baseline.learn_batch(batch)
    again = ItemRateBaseline()
    again.learn(np.array([500, NO_ITEM, 600]), np.array([1.0, 0.0, 1.0]))
    probe = np.array([500, NO_ITEM, 600, 7])
    assert baseline.learn(probe, np.full(4, np.nan)).tolist() == again.learn(probe, np.full(4, np.nan)).tolist()
    assert baseline.learn_batch(_batch(["user_id"], [1, 2], [1, 1], [1.0, 0.0])) is None


@pytest.mark.parametrize("call, message", [
    (lambda: ItemRateBaseline(prior=0.0), "prior"),
    (lambda: ItemRateBaseline().learn(np.array([1, 2]), np.array([1.0])), "2 items for 1 labels"),
    (lambda: ItemRateBaseline().learn(np.array([1]), np.array([0.5])), "labels must be 0, 1 or NaN"),
])
def test_bad_arguments_are_named(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_a_chunk_with_sizes_scores_as_its_micro_batches_one_by_one() -> None:
    rng = np.random.default_rng(3)
    items = rng.integers(1, 40, 300) * 104_729
    labels = (rng.random(300) < 0.3).astype(np.float64)
    sizes = [1] * 50 + [7, 100, 1, 42] + [25] * 4
    together = ItemRateBaseline().learn(items, labels, sizes)
    alone, parts, start = ItemRateBaseline(), [], 0
    for size in sizes:
        parts.append(alone.learn(items[start:start + size], labels[start:start + size]))
        start += size
    np.testing.assert_array_equal(together, np.concatenate(parts))
    with pytest.raises(ValueError, match="micro-batches of 3 rows for 300 items"):
        ItemRateBaseline().learn(items, labels, [1, 2])
