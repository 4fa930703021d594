from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freshrec.models import ModelConfig
from freshrec.train.river import RiverClassifier

river = pytest.importorskip("river")
evaluate = pytest.importorskip("river.evaluate")
river_metrics = pytest.importorskip("river.metrics")


def _stream(rows: int, seed: int = 0):
    """User and item effects, users' taste for one of two item groups, and a price signal."""
    rng = np.random.default_rng(seed)
    taste, bias, quality = rng.normal(0, 1.0, 40), rng.normal(0, 1.0, 40), rng.normal(0, 1.0, 30)
    for _ in range(rows):
        user, item = int(rng.integers(40)), int(rng.integers(30))
        price = float(rng.normal())
        logit = bias[user] + quality[item] + taste[user] * (1 if item < 15 else -1) + 0.8 * price
        yield {"user": f"u{user}", "item": item, "price": price}, bool(rng.random() < 1 / (1 + np.exp(-logit)))


@pytest.mark.parametrize("name", ["fm", "lr"])
def test_progressive_val_score_with_river_rocauc(name: str) -> None:
    model = RiverClassifier(name, ModelConfig(dim=4, lr=0.1))
    metric = evaluate.progressive_val_score(_stream(2_000), model, river_metrics.ROCAUC())
    assert metric.get() > 0.65, metric
    assert model.online.metrics.summary()["rows"] == 2_000  # each example scored before learned


def test_learn_many_and_predict_proba_many() -> None:
    rows = list(_stream(3_000, seed=1))
    X = pd.DataFrame([x for x, _ in rows])
    y = pd.Series([label for _, label in rows])
    model = RiverClassifier("deepfm", ModelConfig(dim=4, lr=0.1))
    for start in range(0, 2_500, 250):
        model.learn_many(X.iloc[start:start + 250], y.iloc[start:start + 250])
    proba = model.predict_proba_many(X.iloc[2_500:])
    assert list(proba.columns) == [False, True] and proba.index.equals(X.index[2_500:])
    assert np.allclose(proba.sum(axis=1), 1.0)
    from freshrec.metrics import auc
    assert auc(proba[True].to_numpy(), y.iloc[2_500:].to_numpy().astype(float)) > 0.65


def test_unknown_and_missing_keys() -> None:
    model = RiverClassifier("fm", ModelConfig(dim=2))
    assert model.predict_proba_one({"user": "a", "price": 1.0}) == {False: 0.5, True: 0.5}
    model.learn_one({"user": "a", "price": 1.0}, True)
    p = model.predict_proba_one({"user": "a", "extra": "ignored"})  # price missing: fill 0
    assert 0.0 < p[True] < 1.0
