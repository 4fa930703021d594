"""AUC over windows: the windows have enough events whatever the stream's length or span, the 95 % band
covers the true AUC about 95 % of the time, a gap's band holds zero between equal arms and excludes
it between a good arm and a random one, and the report draws event time as dates for a 20-year log."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.evaluate.windows import MIN_EVENTS, TARGET, auc_band, gaps, over_windows, window_bounds


@pytest.mark.parametrize("rows", [1, 499, 500, 7_000, 20_000, 10_000_000])
def test_windows_cover_the_stream_with_enough_events_each(rows: int) -> None:
    bounds = window_bounds(rows)
    assert bounds[0].start == 0 and bounds[-1].stop == rows and len(bounds) <= TARGET
    assert all(a.stop == b.start for a, b in zip(bounds, bounds[1:]))
    assert all(b.stop - b.start >= MIN_EVENTS for b in bounds) or len(bounds) == 1


def _scored(rng: np.random.Generator, rows: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels at a 30 % rate and scores that separate them by `signal` (binormal: true AUC known)."""
    labels = rng.random(rows) < 0.3
    return 1 / (1 + np.exp(-(rng.normal(size=rows) + signal * labels))), labels


def test_the_band_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    from scipy.stats import norm

    truth = norm.cdf(1.0 / np.sqrt(2))   # binormal AUC of unit variances and means 1 apart
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        scores, labels = _scored(rng, 800, 1.0)
        entry = over_windows(scores, labels, np.arange(800.0), [slice(0, 800)])[0]
        covered += entry["low"] <= truth <= entry["high"]
    assert 0.91 <= covered / 400 <= 0.99


def test_a_gaps_band_tells_a_real_difference_from_none() -> None:
    rng = np.random.default_rng(3)
    scores, labels = _scored(rng, 20_000, 1.0)
    ts = np.arange(20_000.0)
    bounds = window_bounds(20_000)
    good = over_windows(scores, labels, ts, bounds)
    same = gaps(good, good)
    assert all(g["gap"] == 0 and g["low"] < 0 < g["high"] for g in same)
    random = over_windows(rng.random(20_000), labels, ts, bounds)
    assert all(g["low"] > 0 for g in gaps(good, random))


def test_a_window_with_one_class_has_no_auc() -> None:
    entry = over_windows(np.full(600, 0.5), np.zeros(600, dtype=bool), np.arange(600.0), [slice(0, 600)])[0]
    assert entry["auc"] is None and entry["low"] is None and entry["cumulative_auc"] is None
    assert auc_band(1.0, 10, 10) == (1.0, 1.0)


def test_the_report_draws_twenty_years_as_dates(tmp_path) -> None:
    import matplotlib.pyplot as plt

    from freshrec.evaluate import report

    rng = np.random.default_rng(1)
    rows = 30_000
    ts = np.sort(rng.uniform(0, 20 * 365.25 * 86_400, rows)) + 946_684_800   # 2000 to 2020, sparse
    scores, labels = _scored(rng, rows, 1.0)
    windows = over_windows(scores, labels, ts, window_bounds(rows))
    seen = {}
    original = plt.subplots

    def keep(*args, **kwargs):
        seen["figure"], seen["axes"] = original(*args, **kwargs)
        return seen["figure"], seen["axes"]

    plt.subplots = keep
    try:
        report._auc_windows({"online": {"windows": windows}})
        seen["figure"].canvas.draw()
        years = {label.get_text()[:4] for label in seen["axes"].get_xticklabels() if label.get_text()}
    finally:
        plt.subplots = original
    assert len(windows) == TARGET and years and all(y.isdigit() and 2000 <= int(y) <= 2020 for y in years)
