"""A replica scores request rows as the model's forward does, an FM or LR in one numba pass."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from freshrec.events.event import TS, EventChunk
from freshrec.events.live import arrow_type
from freshrec.features import FeaturePipeline
from freshrec.features.request import RequestRows
from freshrec.models import ModelConfig, build_model
from freshrec.serve.replica import Replica
from freshrec.snapshot import Snapshot
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer
from freshrec.train.fused import fused_model


def _as_chunk(rows: RequestRows, replica: Replica) -> EventChunk:
    columns = {TS: pa.array(np.full(rows.n, rows.ts))}
    columns.update({name: pa.array(rows.column(name), arrow_type(kind)) for name, kind in replica.columns.items()})
    return EventChunk(pa.table(columns), np.arange(rows.n, dtype=np.int64), "request")


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm"])
def test_request_scores_equal_the_forwards_probabilities(name):
    data = stream(rows=4096, batch_size=512)
    trainer = OnlineTrainer(build_model(name, data.specs, ModelConfig(dim=8)))
    for batch in data.batches:
        trainer.learn(batch)
    replica = Replica.from_snapshot(Snapshot(trainer.model, version=1))
    assert fused_model(replica.model) == (name != "deepfm")
    rng = np.random.default_rng(0)
    items = [int(i) for i in rng.integers(0, 2000, 100)] + ["never-seen"]
    rows = replica.rows(3, items, shared=lambda column: None, per_item=lambda column: [None] * len(items),
                        item_columns=())
    with torch.no_grad():   # the forward on the pipeline's batch of the same rows
        expected = torch.sigmoid(replica.model(FeaturePipeline(data.specs).build(_as_chunk(rows, replica)),
                                               train=False)).numpy()
    scores = replica.score(rows)
    assert scores.dtype == np.float32 and len(set(scores.round(4).tolist())) > 10
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    same, cold = replica.score_with_cold(rows)   # the cold starts from the scoring's own lookup
    np.testing.assert_array_equal(same, scores)
    np.testing.assert_array_equal(cold["item_id"], replica.unknown("item_id", rows.per_row["item_id"]))
    assert cold["item_id"][-1] and not cold["item_id"].all()
    assert cold["user_id"].tolist() == [replica.unknown("user_id", ["3"])[0]] * len(items)
