"""The retrieval trainer: streaming frequencies, the catalogue, in-batch + sampled negatives with the logQ
correction, and a two-tower that learns who likes what."""

import numpy as np
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models.two_tower import TwoTower, TwoTowerConfig
from freshrec.train.retrieval import Catalogue, FrequencyEstimate, RetrievalConfig, RetrievalTrainer

SPECS = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)]


def _batch(users, items) -> Batch:
    return Batch(SparseFeatures(["user_id", "item_id"], torch.tensor(list(users) + list(items)),
                                torch.ones(2 * len(users), dtype=torch.int32)),
                 dense=torch.zeros(len(users), 0), labels=torch.ones(len(users)),
                 ts=torch.zeros(len(users), dtype=torch.float64))


def test_frequency_follows_each_items_rate():
    estimate = FrequencyEstimate(buckets=1 << 10, decay=0.1)
    for step in range(1, 401):
        estimate.update(np.array([1] + [2] * (step % 2 == 0) + [3] * (step % 10 == 0)), step)
    assert np.allclose(estimate.probability(np.array([1, 2, 3])), [1.0, 0.5, 0.1], atol=0.02)
    assert estimate.probability(np.array([4]))[0] == 0.0


def test_catalogue_keeps_each_item_once_with_its_first_content():
    catalogue = Catalogue(content_dim=1)
    added = catalogue.add(np.array([5, 6, 5]), np.array([[1.0], [2.0], [3.0]]))
    assert sorted(added.tolist()) == [5, 6] and len(catalogue) == 2
    assert catalogue.add(np.array([6, 7]), np.array([[9.0], [4.0]])).tolist() == [7]
    assert catalogue.content_of(np.array([7, 5, 6])).ravel().tolist() == [4.0, 1.0, 2.0]


def test_an_item_is_never_its_own_negative():
    model = TwoTower(SPECS, TwoTowerConfig(dim=4, out_dim=4, history_field=""))
    trainer = RetrievalTrainer(model, Catalogue(0), RetrievalConfig(negatives=0))
    step = trainer.learn(_batch([1, 2, 3], [10, 10, 10]))          # one item for every row: nothing to contrast
    assert step["loss"] == 0.0


def test_users_learn_their_own_items():
    model = TwoTower(SPECS, TwoTowerConfig(dim=8, out_dim=8, history_field=""))
    trainer = RetrievalTrainer(model, Catalogue(0), RetrievalConfig(negatives=8, lr=0.1))
    users = np.arange(1, 11)
    rng = np.random.default_rng(0)
    for _ in range(150):
        chosen = rng.choice(users, 8, replace=False)
        trainer.learn(_batch(chosen, chosen + 100))                  # user u likes item u + 100
    request = SparseFeatures(["user_id"], torch.from_numpy(users), torch.ones(10, dtype=torch.int32))
    queries = model.user_vectors(request)
    items = model.item_vectors(users + 100)
    best = (queries @ items.T).argmax(1).numpy()
    assert (best == np.arange(10)).mean() >= 0.9
