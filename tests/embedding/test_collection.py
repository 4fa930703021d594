from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from freshrec.batch import SparseFeatures
from freshrec.embedding.collection import EmbeddingCollection, pool
from freshrec.embedding.optimizers import SGD
from freshrec.embedding.table import TableConfig
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec

CAT, MULTI = FieldKind.CATEGORICAL, FieldKind.MULTI_CATEGORICAL


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_gradients_and_sgd_update_equal_nn_embedding_bag(mode: str) -> None:
    specs = [FeatureSpec("genres", MULTI, dim=3)]
    collection = EmbeddingCollection(specs, TableConfig(dim=3, optimizer=SGD(lr=0.5), init_std=0.3), mode)
    genres = [[5, 6, 5], [], [7], [6, 7, 8, 5]]
    sparse = SparseFeatures(["genres"], torch.tensor([g for b in genres for g in b]),
                            torch.tensor([len(b) for b in genres], dtype=torch.int32))
    table = collection.tables["genres"]
    ids = np.array([5, 6, 7, 8])
    table.slots(ids, now=0.0, train=True)  # admit, so both sides start from the same rows
    start = table.gather(table.slots(ids, 0.0, False)).clone()

    weights = torch.tensor([[1.0, -2.0, 0.5]])
    out = collection(sparse, now=1.0, train=True)["genres"]
    (out * weights).sum().backward()
    served = collection._served[0][2].grad.clone()
    collection.apply_gradients()

    bag = nn.EmbeddingBag(4, 3, mode=mode)
    bag.weight.data.copy_(start)
    index = torch.tensor([int(np.flatnonzero(ids == g)[0]) for b in genres for g in b])
    offsets = torch.tensor([0] + list(np.cumsum([len(b) for b in genres])[:-1]))
    (bag(index, offsets) * weights).sum().backward()
    if mode == "sum":  # every occurrence of an id in a summed bag gets the upstream gradient
        torch.testing.assert_close(served, weights.expand(len(index), 3))
    torch.testing.assert_close(torch.zeros(4, 3).index_add_(0, index, served), bag.weight.grad)
    with torch.no_grad():
        expected = start - 0.5 * bag.weight.grad
    torch.testing.assert_close(table.gather(table.slots(ids, 1.0, False)), expected)


def test_shared_table_gives_one_row_per_id() -> None:
    specs = [FeatureSpec("item_id", CAT, dim=4, table="items"), FeatureSpec("history", MULTI, dim=4, table="items")]
    collection = EmbeddingCollection(specs, TableConfig(dim=4, optimizer=SGD(lr=0.1)))
    sparse = SparseFeatures(["item_id", "history"], torch.tensor([3, 9, 3]), torch.tensor([1, 2], dtype=torch.int32))
    out = collection(sparse, now=0.0, train=True)
    assert list(collection.tables) == ["items"] and collection.tables["items"].live == 2
    torch.testing.assert_close(out["history"][0], out["item_id"][0] + collection.tables["items"].gather(
        collection.tables["items"].slots(np.array([9]), 0.0, False))[0])


def test_unadmitted_ids_pool_zero_and_get_no_update() -> None:
    specs = [FeatureSpec("user_id", CAT, dim=2)]
    collection = EmbeddingCollection(specs, TableConfig(dim=2, admit_after=2, optimizer=SGD(lr=1.0)))
    sparse = SparseFeatures(["user_id"], torch.tensor([42]), torch.ones(1, dtype=torch.int32))
    first = collection(sparse, now=0.0, train=True)["user_id"]
    assert first.abs().sum() == 0
    first.sum().backward()
    collection.apply_gradients()
    assert collection.tables["user_id"].live == 0
    second = collection(sparse, now=1.0, train=True)["user_id"]
    assert collection.tables["user_id"].live == 1 and second.abs().sum() > 0


def test_eval_does_not_insert_and_dims_must_agree() -> None:
    specs = [FeatureSpec("user_id", CAT, dim=2)]
    collection = EmbeddingCollection(specs, TableConfig(dim=2))
    out = collection(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)), now=0.0)
    assert out["user_id"].abs().sum() == 0 and collection.tables["user_id"].live == 0
    with pytest.raises(ValueError, match="shared by features of dims"):
        EmbeddingCollection([FeatureSpec("a", CAT, dim=2, table="t"), FeatureSpec("b", CAT, dim=3, table="t")],
                            TableConfig())
    with pytest.raises(ValueError, match="pooling"):
        EmbeddingCollection(specs, TableConfig(), pooling="max")


def test_pool_mean_and_empty_bags() -> None:
    rows = torch.tensor([[2.0, 4.0], [4.0, 8.0], [1.0, 1.0]])
    assert pool(rows, torch.tensor([2, 0, 1]), "mean").tolist() == [[3.0, 6.0], [0.0, 0.0], [1.0, 1.0]]
    assert pool(rows, torch.tensor([2, 0, 1]), "sum").tolist() == [[6.0, 12.0], [0.0, 0.0], [1.0, 1.0]]
