"""Prequential metrics: binned vs exact AUC, logloss/NE/calibration by hand, windows over events
and event time, the tail, bounded memory, NaN labels and empty metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.metrics import PrequentialMetrics, auc, logloss

KEYS = ["rows", "positives", "auc", "logloss", "ne", "calibration", "mean_prediction",
        "observed_rate"]


def _stream(n: int, seed: int, skill: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Click-model-like scores: logits ~ N(-2, 1.5); labels drawn from the true probability,
    the predictor sees the truth mixed with noise (`skill` 0: pure noise)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(-2.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype(np.float64)
    seen = skill * truth + (1 - skill) * rng.normal(-2.0, 1.5, n)
    return 1 / (1 + np.exp(-seen)), labels


def _feed(metrics: PrequentialMetrics, probs, labels, ts=None, seed: int = 0) -> None:
    """Feed in micro-batches of random sizes (1 to 3000 rows)."""
    rng = np.random.default_rng(seed)
    at = 0
    while at < len(probs):
        end = at + int(rng.integers(1, 3000))
        metrics.update(probs[at:end], labels[at:end], None if ts is None else ts[at:end])
        at = end


def _recomputed(probs, labels) -> dict:
    """The figures of a fresh, window-less PrequentialMetrics over exactly these rows."""
    fresh = PrequentialMetrics(window_events=None)
    fresh.update(probs, labels)
    return fresh.summary()


def _brute_auc(probs, labels) -> float:
    pos = [p for p, y in zip(probs, labels) if y == 1]
    neg = [p for p, y in zip(probs, labels) if y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_exact_auc_counts_ties_half_like_pairwise_counting(rows):
    scores = [s / 5 for s, _ in rows]
    labels = [int(y) for _, y in rows]
    if len(set(labels)) < 2:
        assert math.isnan(auc(scores, labels))
    else:
        assert auc(scores, labels) == pytest.approx(_brute_auc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "click-model"])
def test_binned_auc_within_2e3_of_exact_on_100k_rows(kind):
    if kind == "uniform":
        rng = np.random.default_rng(1)
        probs = rng.random(100_000)
        labels = (rng.random(100_000) < probs).astype(float)
    else:
        probs, labels = _stream(100_000, seed=2, skill=0.7)
    metrics = PrequentialMetrics(bins=4096)
    metrics.update(probs, labels)
    assert abs(metrics.summary()["auc"] - auc(probs, labels)) < 2e-3


def test_perfect_random_and_inverted_predictors():
    rng = np.random.default_rng(3)
    labels = (rng.random(100_000) < 0.3).astype(float)
    perfect = np.where(labels == 1, 0.9, 0.1) + rng.uniform(-0.05, 0.05, labels.size)
    results = {}
    for name, probs in [("perfect", perfect), ("random", rng.random(labels.size)),
                        ("inverted", 1 - perfect)]:
        metrics = PrequentialMetrics()
        metrics.update(probs, labels)
        results[name] = metrics.summary()["auc"]
    assert results["perfect"] == 1.0
    assert results["inverted"] == 0.0
    assert results["random"] == pytest.approx(0.5, abs=0.01)


def test_logloss_and_ne_by_hand():
    probs, labels = np.array([0.9, 0.2, 0.6, 0.3]), np.array([1, 0, 0, 1])
    by_hand = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.3)) / 4
    metrics = PrequentialMetrics()
    metrics.update(probs, labels)
    summary = metrics.summary()
    assert logloss(probs, labels) == pytest.approx(by_hand, rel=1e-12)
    assert summary["logloss"] == pytest.approx(by_hand, rel=1e-12)
    assert summary["ne"] == pytest.approx(by_hand / math.log(2), rel=1e-12)  # base rate 1/2


def test_ne_is_one_for_a_predictor_that_outputs_the_base_rate():
    labels = np.array([1.0] * 3 + [0.0] * 7)
    metrics = PrequentialMetrics()
    metrics.update(np.full(10, 0.3), labels)
    summary = metrics.summary()
    assert summary["ne"] == pytest.approx(1.0, rel=1e-12)
    assert summary["auc"] == 0.5  # every pair tied


def test_logloss_clips_probabilities():
    assert logloss([0.0, 1.0], [1, 0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert logloss([0.0, 1.0], [0, 1]) == pytest.approx(-math.log1p(-1e-7), rel=1e-9)


def test_calibration_is_mean_prediction_over_observed_rate():
    metrics = PrequentialMetrics()
    metrics.update(np.full(1000, 0.2), (np.arange(1000) < 100).astype(float))
    summary = metrics.summary()
    assert summary["rows"] == 1000 and summary["positives"] == 100
    assert summary["mean_prediction"] == pytest.approx(0.2)
    assert summary["observed_rate"] == pytest.approx(0.1)
    assert summary["calibration"] == pytest.approx(2.0)


def test_batching_does_not_change_the_figures():
    probs, labels = _stream(20_000, seed=4)
    whole = PrequentialMetrics(window_events=5_000)
    whole.update(probs, labels)
    pieces = PrequentialMetrics(window_events=5_000)
    _feed(pieces, probs, labels, seed=5)
    for a, b in [(whole.summary(), pieces.summary()), (whole.window(), pieces.window())]:
        assert a["rows"] == b["rows"] and a["auc"] == b["auc"]
        assert a["logloss"] == pytest.approx(b["logloss"], rel=1e-9)


def test_window_over_events_matches_the_retained_slice():
    probs, labels = _stream(123_457, seed=6)
    metrics = PrequentialMetrics(window_events=10_000)
    _feed(metrics, probs, labels)
    window = metrics.window()
    assert 10_000 - 10_000 / 64 <= window["rows"] <= 10_000
    expected = _recomputed(probs[-window["rows"]:], labels[-window["rows"]:])
    for key in KEYS:
        assert window[key] == pytest.approx(expected[key], rel=1e-9), key
    assert abs(window["auc"] - auc(probs[-window["rows"]:], labels[-window["rows"]:])) < 2e-3


def test_window_over_event_time_matches_the_retained_slice():
    probs, labels = _stream(50_000, seed=7)
    ts = 1.7e9 + np.sort(np.random.default_rng(8).uniform(0, 7200, probs.size))
    metrics = PrequentialMetrics(window_seconds=600.0)
    _feed(metrics, probs, labels, ts)
    window = metrics.window()
    newest = ts[-1]
    assert np.all(ts[-window["rows"]:] >= newest - 600)
    assert window["rows"] >= np.count_nonzero(ts >= newest - 600 + 600 / 64)
    expected = _recomputed(probs[-window["rows"]:], labels[-window["rows"]:])
    for key in KEYS:
        assert window[key] == pytest.approx(expected[key], rel=1e-9), key


def test_late_events_join_their_block_or_count_only_overall():
    metrics = PrequentialMetrics(window_seconds=64.0)
    metrics.update([0.9, 0.1], [1, 0], ts=[1000.0, 1000.5])
    metrics.update([0.8], [1], ts=[1000.2])  # late, still inside the window
    metrics.update([0.3], [1], ts=[10.0])  # far too late for the window
    assert metrics.window()["rows"] == 3 and metrics.window()["positives"] == 2
    assert metrics.summary()["rows"] == 4


def test_window_slides_out_old_events():
    metrics = PrequentialMetrics(window_events=640)
    metrics.update(np.full(10_000, 0.9), np.zeros(10_000))
    metrics.update(np.full(640, 0.1), np.zeros(640))
    window = metrics.window()
    assert window["rows"] == 640 and window["mean_prediction"] == pytest.approx(0.1)


def test_tail_reflects_the_later_part_of_a_stream_that_improves():
    noise, labels_a = _stream(60_000, seed=9, skill=0.0)
    good, labels_b = _stream(60_000, seed=10, skill=1.0)
    probs, labels = np.concatenate([noise, good]), np.concatenate([labels_a, labels_b])
    metrics = PrequentialMetrics()
    _feed(metrics, probs, labels)
    tail = metrics.tail(0.2)
    assert abs(tail["rows"] - 24_000) <= 2 * 120_000 / 64
    assert tail["auc"] == pytest.approx(auc(probs[-tail["rows"]:], labels[-tail["rows"]:]),
                                        abs=2e-3)
    assert tail["auc"] > 0.8 > metrics.summary()["auc"] + 0.1
    assert metrics.tail(1.0)["rows"] == 120_000


@pytest.mark.parametrize("window", [{"window_events": 5_000}, {"window_seconds": 30.0}])
def test_memory_stays_bounded(window):
    probs, labels = _stream(50_000, seed=11)
    metrics = PrequentialMetrics(**window)
    sizes = {}
    for step in range(200):  # 10M events, event time 1 s per 1000 events
        ts = (step * 50_000 + np.arange(50_000)) / 1000.0
        metrics.update(probs, labels, ts)
        if step + 1 in (20, 200):
            sizes[(step + 1) * 50_000] = metrics.nbytes
    assert metrics.summary()["rows"] == 10_000_000
    assert sizes[1_000_000] == sizes[10_000_000] <= 1.01 * (66 + 64) * 2 * 4096 * 8


def test_nan_labels_are_ignored():
    probs, labels = _stream(5_000, seed=12)
    holed = labels.copy()
    holed[::7] = np.nan
    metrics = PrequentialMetrics(window_events=1_000)
    metrics.update(probs, holed)
    keep = ~np.isnan(holed)
    expected = _recomputed(probs[keep], labels[keep])
    assert metrics.summary() == pytest.approx(expected, rel=1e-12)
    assert auc(probs, holed) == auc(probs[keep], labels[keep])


def test_empty_metrics_give_none_not_errors():
    metrics = PrequentialMetrics(window_seconds=10.0)
    metrics.update(np.zeros(0), np.zeros(0), np.zeros(0))
    metrics.update([0.5, 0.5], [np.nan, np.nan], [1.0, 2.0])
    for figures in [metrics.summary(), metrics.window(), metrics.tail(0.2)]:
        assert figures == {"rows": 0, "positives": 0, **dict.fromkeys(KEYS[2:])}
    assert math.isnan(logloss([], []))


def test_one_class_gives_none_for_auc_ne_and_calibration_where_undefined():
    metrics = PrequentialMetrics()
    metrics.update([0.2, 0.4], [0, 0])
    summary = metrics.summary()
    assert summary["auc"] is None and summary["ne"] is None and summary["calibration"] is None
    assert summary["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.update([0.5], [1, 0]), "scores for"),
    (lambda m: m.update([0.5], [2]), "labels must be"),
    (lambda m: m.update([1.5], [1]), "probabilities must"),
    (lambda m: m.update([np.nan], [1]), "probabilities must"),
    (lambda m: m.tail(0.0), "fraction"),
])
def test_bad_input_is_refused_with_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(PrequentialMetrics())


def test_a_time_window_needs_event_times():
    with pytest.raises(ValueError, match="pass ts"):
        PrequentialMetrics(window_seconds=5.0).update([0.5], [1])


@pytest.mark.parametrize("options, message", [
    ({"checkpoints": 1}, "checkpoints must be at least 2"),
    ({"window_events": 0}, "window_events must be positive"),
    ({"window_seconds": -1.0}, "window_seconds must be positive"),
])
def test_bad_options_are_refused_with_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        PrequentialMetrics(**options)
