"""The retriever: a two-tower followed from its own registry, its item vectors in the ANN index (rebuilt on each
new model version, new items added between), and /recommend merging its candidates with the candidate index's;
the items' content in the service, for a ranking model with content features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from conftest import TwoTowerTrainer
from fastapi.testclient import TestClient

from freshrec.events.event import FieldKind
from freshrec.features import ContentCache, FeatureSpec
from freshrec.features.content import ItemContent
from freshrec.models import build_model
from freshrec.serve import create_app
from freshrec.serve.retriever import Retriever
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry, Snapshot


class Digits:
    """A text encoder: how often each digit occurs in the text."""

    name, dim = "digits", 10

    def encode(self, texts):
        return np.array([[t.count(str(d)) for d in range(10)] for t in texts], np.float32)


def _served(trained, tmp_path, content=None, history: int = 0) -> tuple[ModelService, TwoTowerTrainer]:
    two = TwoTowerTrainer(tmp_path / "retrieval", trained.publisher.fields, content, history)
    for chunk in trained.chunks[:3]:
        trained.learn(chunk)
        two.learn(chunk)
    ranking = ModelService(trained.registry)
    ranking.sync()
    ranking.retriever = Retriever(ModelService(two.registry, content=content, interactions=False), ranking, content)
    return ranking, two


def test_the_index_holds_every_item_and_follows_new_versions(trained, tmp_path):
    ranking, two = _served(trained, tmp_path)
    retriever = ranking.retriever
    first = retriever.sync()
    assert first is not None and len(retriever.index) == len(set(map(str, ranking.candidates.items())))
    assert ranking.candidates.observed and not retriever.models.candidates.observed   # one index, the ranking's
    index_version = retriever.index.version
    trained.learn(trained.chunks[3])
    two.learn(trained.chunks[3])
    ranking.sync()
    assert retriever.sync() > first and retriever.index.version > index_version
    assert len(retriever.index) == len(set(map(str, ranking.candidates.items())))


def test_candidates_leave_out_what_the_user_had_and_feed_recommend(trained, tmp_path):
    ranking, _ = _served(trained, tmp_path)
    ranking.retriever.sync()
    user = max(ranking.candidates.user_fields, key=lambda u: len(ranking.candidates.consumed(u)))
    had = {str(item) for item in ranking.candidates.consumed(user)}
    retrieved = ranking.retriever.candidates(user, 30)
    assert len(retrieved) == 30 and not had & set(map(str, retrieved))
    scored = ranking.recommend(user, {}, k=10, candidates=30)
    assert len(scored.items) == 10 and not had & set(map(str, scored.items))
    client = TestClient(create_app(ranking))
    with client:
        answer = client.post("/recommend", json={"user": user, "k": 5})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 5


def test_an_item_with_content_is_retrievable_before_its_first_interaction(trained, tmp_path):
    seen = sorted({str(i) for chunk in trained.chunks[:3] for i in chunk.column("item_id").to_pylist()})
    items = pa.table({"item_id": pa.array([int(i) for i in seen] + [10**9], pa.int64()),
                      "text": [f"item {i}" for i in seen] + ["item 1000000000"]})
    content = ItemContent.build(items, ContentCache(tmp_path / "cache", Digits()))
    ranking, _ = _served(trained, tmp_path, content)
    ranking.retriever.sync()
    assert len(ranking.retriever.index) == len(seen) + 1
    assert 10**9 in ranking.retriever.candidates("a new user", len(seen) + 1)


def test_a_query_is_the_user_vector_the_model_learned_with(trained, tmp_path):
    ranking, two = _served(trained, tmp_path, history=5)
    retriever = ranking.retriever
    retriever.sync()
    rows = pa.concat_tables(chunk.table for chunk in trained.chunks[:3])
    users = rows.column("user_id").to_pylist()
    learner = two.learner
    checked = 0
    for user in dict.fromkeys(users):
        recent = list(learner.recent[user])
        if len(recent) < 2 or len(set(recent)) < len(recent):   # serving keeps distinct items: no repeats here
            continue
        last = rows.slice(max(i for i, u in enumerate(users) if u == user), 1)   # the user's latest fields
        learned = learner.model.eval().towers(learner.batch(last))[0][0].detach().numpy()
        with retriever.models.switcher.lease() as replica:
            served = retriever._query(replica, str(user))
        np.testing.assert_allclose(served, learned, atol=1e-6)
        checked += 1
    assert checked >= 5


def test_a_model_with_content_features_is_refused_without_the_content_and_scored_with_it(tmp_path):
    content = ItemContent(pa.array([1, 2]), np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    specs = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL),
             *content.specs()]
    model = build_model("fm", specs)
    with torch.no_grad():
        model.dense.weight.copy_(torch.tensor([[2.0, -2.0]]))   # item 1's content scores up, item 2's down
    registry = ModelRegistry(tmp_path)
    registry.publish(Snapshot(model, version=1))
    bare = ModelService(registry)
    assert bare.sync() is None and "version 1 was refused" in bare.behind
    health = TestClient(create_app(bare)).get("/healthz").json()
    assert not health["ready"] and "version 1 was refused" in health["detail"]
    served = ModelService(registry, content=content)
    assert served.sync() == 1
    scored = served.score("u", {}, [("1", {}), ("2", {}), ("3", {})])
    assert scored.scores[0] > scored.scores[2] == 0.5 > scored.scores[1]   # 3: no content, a zero vector


def test_a_new_version_reindexes_at_most_every_reindex_interval_and_new_items_come_at_once(trained, tmp_path):
    ranking, two = _served(trained, tmp_path)
    retriever = ranking.retriever
    first = retriever.sync()
    index_version, items = retriever.index.version, len(retriever.index)
    for chunk in trained.chunks[3:5]:
        trained.learn(chunk)
        two.learn(chunk)
    ranking.sync()
    new_items = len(set(map(str, ranking.candidates.items()))) - items
    assert retriever.sync(reindex_interval=3600) == first          # a newer version, but re-indexed just now
    assert new_items > 0 and len(retriever.index) == items + new_items and retriever.index.version == index_version + 1
    assert retriever.sync(reindex_interval=0) > first              # due: every item's vector from the new version
