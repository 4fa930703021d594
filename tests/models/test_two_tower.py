"""The two-tower model: unit vectors, scores as their inner product, request-time vectors equal to training's."""

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models.two_tower import TwoTower, TwoTowerConfig

SPECS = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL),
         FeatureSpec("history", FieldKind.MULTI_CATEGORICAL, table="item_id"),
         FeatureSpec("content.0", FieldKind.DENSE), FeatureSpec("content.1", FieldKind.DENSE)]


def _batch(users, items, histories, content) -> Batch:
    values = list(users) + list(items) + [i for h in histories for i in h]
    lengths = [1] * (len(users) + len(items)) + [len(h) for h in histories]
    return Batch(SparseFeatures(["user_id", "item_id", "history"], torch.tensor(values),
                                torch.tensor(lengths, dtype=torch.int32)),
                 dense=torch.tensor(content, dtype=torch.float32), labels=torch.ones(len(users)),
                 ts=torch.zeros(len(users), dtype=torch.float64), dense_keys=("content.0", "content.1"))


def test_scores_are_inner_products_of_unit_vectors_over_the_temperature():
    model = TwoTower(SPECS, TwoTowerConfig(dim=8, out_dim=4, temperature=0.1))
    batch = _batch([1, 2], [30, 31], [[30], []], [[0.5, -1.0], [0.0, 2.0]])
    model(batch, train=True)                                      # admits the ids
    users, items = model.towers(batch)
    assert torch.allclose(users.norm(dim=1), torch.ones(2)) and torch.allclose(items.norm(dim=1), torch.ones(2))
    assert torch.allclose(model(batch), (users * items).sum(1) / 0.1)


def test_request_vectors_match_the_towers():
    model = TwoTower(SPECS, TwoTowerConfig(dim=8, out_dim=4))
    batch = _batch([1, 2], [30, 31], [[30, 31], [31]], [[0.5, -1.0], [0.0, 2.0]])
    model(batch, train=True)
    users, items = model.towers(batch)
    request = SparseFeatures(["user_id", "history"], torch.tensor([1, 2, 30, 31, 31]),
                             torch.tensor([1, 1, 2, 1], dtype=torch.int32))
    assert torch.allclose(model.user_vectors(request), users, atol=1e-6)
    assert torch.allclose(model.item_vectors(np.array([30, 31]), batch.dense), items, atol=1e-6)


def test_a_new_item_is_placed_by_its_content():
    model = TwoTower(SPECS, TwoTowerConfig(dim=8, out_dim=4))
    content = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    unknown = model.item_vectors(np.array([98, 99]), content)      # no rows: content alone differs
    assert not torch.allclose(unknown[0], unknown[1])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no item field 'item_id'"):
        TwoTower([FeatureSpec("user_id", FieldKind.CATEGORICAL)])
    model = TwoTower(SPECS, TwoTowerConfig(dim=8, out_dim=4))
    with pytest.raises(ValueError, match="content is 3 wide, the model takes 2"):
        model.item_vectors(np.array([5]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="lacks the user fields"):
        model.user_vectors(SparseFeatures(["user_id"], torch.tensor([1]), torch.ones(1, dtype=torch.int32)))
    with pytest.raises(ValueError, match="temperature"):
        TwoTowerConfig(temperature=0.0)
