from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.batch import Batch
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.fusion import HISTORY_POINTS, FusionConfig, HedgeFusion, rebase
from freshrec.models import DeepFMConfig, ModelConfig, OnlineModel, build_model
from freshrec.snapshot import table_versions
from freshrec.train import OfflineConfig, OfflineTrainer, OnlineTrainer


def _stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with known rates, a good predictor (the rates) and a poor one (0.5 blurred)."""
    rate = rng.choice([0.1, 0.9], n)
    labels = (rng.random(n) < rate).astype(np.float64)
    return rate, np.clip(0.5 + rng.normal(0, 0.05, n), 0.01, 0.99), labels


def test_hedge_moves_weight_to_the_better_model_within_a_window_and_back() -> None:
    rng, fusion, window = np.random.default_rng(0), HedgeFusion(window=500), 500
    for _ in range(10):  # the online model is the better one
        good, poor, y = _stream(rng, 100)
        fusion.learn(good, poor, y)
    assert fusion.weights["online"] > 0.65
    for step in range(window // 100):  # they swap: within one window the weight follows
        good, poor, y = _stream(rng, 100)
        fusion.learn(poor, good, y)
        if step == 0:
            assert fusion.weights["online"] > 0.5  # one batch of the new regime is not enough
    assert fusion.weights["offline"] > 0.65
    w = fusion.weights
    assert w["online"] + w["offline"] == pytest.approx(1.0, abs=1e-12) and 0 < w["online"] < 1


def _close_models(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Click labels and two models as close as two good click models are: the true rates with a
    little and with more noise in logit (log loss apart by about 0.015)."""
    logit = rng.normal(-1.5, 1.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)

    def model(noise: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(logit + rng.normal(0, noise, n))))
    return model(0.2), model(0.5), labels


def test_default_hedge_follows_models_close_in_log_loss_both_ways() -> None:
    """The offline model is the better one for a while, then the worse: with the default settings
    the online weight crosses 0.5 down, then up (with the mean-loss weights it sat near 0.5)."""
    rng, fusion = np.random.default_rng(5), FusionConfig().hedge()
    path = []
    for better_offline in (True, False):
        for _ in range(30):
            better, worse, y = _close_models(rng, 200)
            online, offline = (worse, better) if better_offline else (better, worse)
            fusion.learn(online, offline, y)
            path.append(fusion.weights["online"])
    assert max(path[15:30]) < 0.35 and min(path[45:]) > 0.6, path
    assert np.mean(path[15:30]) < 0.25 and np.mean(path[45:]) > 0.75, path
    crossings = np.flatnonzero(np.diff(np.sign(np.array(path) - 0.5)))
    assert len(crossings) == 1 and 30 <= crossings[0] < 40, path   # down from the start, up within a window


def test_hedge_weights_are_the_exponentiated_window_losses() -> None:
    rng = np.random.default_rng(1)
    good, poor, y = _stream(rng, 300)
    fusion = HedgeFusion(window=200, eta=0.003)
    fusion.learn(good, poor, y)

    def loss(p: np.ndarray) -> float:
        return float(-np.where(y[-200:] == 1, np.log(p[-200:]), np.log1p(-p[-200:])).mean())

    expected = 1 / (1 + np.exp(-0.003 * 200 * (loss(poor) - loss(good))))   # summed over the window
    assert fusion.weights["online"] == pytest.approx(expected, rel=1e-12)
    blended = fusion.predict(good, poor)
    assert np.allclose(blended, expected * good + (1 - expected) * poor, rtol=0, atol=1e-15)
    assert ((blended >= np.minimum(good, poor)) & (blended <= np.maximum(good, poor))).all()


def test_hedge_without_an_offline_model_is_the_online_model() -> None:
    fusion = HedgeFusion(window=100)
    p, y = np.array([0.2, 0.7, 0.9], np.float32), np.array([0.0, 1.0, float("nan")])
    assert np.array_equal(fusion.predict(p, None), p.astype(np.float64))
    fusion.learn(p, None, y)
    assert fusion.weights == {"online": 0.5, "offline": 0.5}  # nothing scored by both yet
    assert fusion.history == [(2, 1.0)] and fusion.events == 2  # the NaN label is not an event
    assert np.allclose(fusion.predict(p, 1 - p), 0.5)


def test_hedge_is_deterministic_and_its_history_bounded() -> None:
    def run() -> HedgeFusion:
        rng, fusion = np.random.default_rng(2), HedgeFusion(window=50)
        for _ in range(3 * HISTORY_POINTS):
            good, poor, y = _stream(rng, 5)
            fusion.learn(good, poor, y)
        return fusion

    a, b = run(), run()
    assert a.history == b.history and a.weights == b.weights
    events = [e for e, _ in a.history]
    assert HISTORY_POINTS // 2 <= len(events) <= HISTORY_POINTS and events == sorted(events)
    assert events[0] == 5 and a.events == 15 * HISTORY_POINTS and events[-1] > 0.9 * a.events


def test_hedge_refuses_mismatched_inputs_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="offline predictions"):
        HedgeFusion().predict(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        HedgeFusion().learn(np.zeros(3), None, np.zeros(2))
    with pytest.raises(ValueError, match="window"):
        HedgeFusion(window=0).predict(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="strategy"):
        FusionConfig(strategy="mean")
    assert FusionConfig(window=10, eta=1.0).hedge().window == 10


SIM = SimulatorConfig(n_users=100, n_items=50, batch_size=500, total_events=3000, new_user_rate=40.0, seed=4)
SPECS = default_specs(Simulator(SIM).fields, dim=4)


def _deepfm() -> OnlineModel:
    return build_model("deepfm", SPECS, DeepFMConfig(dim=4, hidden=(8,), seed=1))


def _ids(model: OnlineModel, name: str) -> set[int]:
    return set(model.tables[name].state_dict()["ids"].tolist())


def _rows(model: OnlineModel, name: str, ids: np.ndarray) -> tuple[torch.Tensor, dict]:
    table = model.tables[name]
    slots = table.slots(ids, now=0.0, train=False)
    assert (slots >= 0).all()
    return table.gather(slots), {k: table.storage.gather(slots, k) for k in table.storage.state_names}


def test_rebase_gives_the_online_model_the_offline_weights_and_keeps_newer_ids() -> None:
    batches: list[Batch] = [FeaturePipeline(SPECS).build(chunk) for chunk in Simulator(SIM)]
    offline = OfflineTrainer(_deepfm, OfflineConfig(epochs=2, holdout_fraction=0.0)).learn(batches[:3]).model
    online = OnlineTrainer(_deepfm())
    for batch in batches:  # the online model also saw the later range, with new users
        online.learn(batch)
    names = list(online.model.tables)
    newer = {name: np.array(sorted(_ids(online.model, name) - _ids(offline, name))) for name in names}
    assert sum(len(ids) for ids in newer.values()) > 50  # the new users
    kept = {name: _rows(online.model, name, newer[name]) for name in names if len(newer[name])}
    offline_before = {name: offline.tables[name].state_dict()["rows"].copy() for name in names}
    versions = table_versions(online.model)
    weight = next(online.model.parameters())

    rebase(online.model, offline)

    with torch.no_grad():  # ids both know, and ids only the offline model knows: its predictions exactly
        for batch in batches[:3]:
            assert torch.equal(online.model.eval()(batch, train=False), offline(batch, train=False))
    online.model.train()
    for name, (rows, state) in kept.items():  # ids only the online model knows keep their rows and state
        after_rows, after_state = _rows(online.model, name, newer[name])
        assert torch.equal(rows, after_rows) and all(torch.equal(state[k], after_state[k]) for k in state)
    for name in names:
        assert np.array_equal(offline.tables[name].state_dict()["rows"], offline_before[name])  # only read
        theirs = offline.tables[name].state_dict()["ids"]
        assert set(online.model.tables[name].delta_since(versions[name]).ids.tolist()) >= set(theirs.tolist())
        assert _ids(online.model, name) == _ids(offline, name) | set(newer[name].tolist())
    assert next(online.model.parameters()) is weight  # the dense optimizer still holds the parameters
    assert not online.learn(batches[-1])["skipped"]  # and learning goes on from there


def test_rebase_refuses_another_kind_of_model() -> None:
    with pytest.raises(ValueError, match="cannot rebase"):
        rebase(_deepfm(), build_model("lr", SPECS, ModelConfig(dim=4)))
