"""The simulator: deterministic, seekable, power-law, drifting, with a known click model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.event import STANDARD_COLUMNS, FieldKind
from freshrec.events.simulator import Simulator, SimulatorConfig, write_criteo_tsv
from freshrec.events.source import Source

SMALL = SimulatorConfig(n_users=2_000, n_items=1_000, batch_size=1_000, total_events=6_000,
                        new_user_rate=20.0, new_item_rate=10.0, drift=0.05, seed=7)


def _all(sim: Simulator) -> pa.Table:
    return pa.concat_tables([chunk.table for chunk in sim])


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-sum AUC with mid-ranks for ties."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positive = labels > 0.5
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _ids(chunk, name: str) -> np.ndarray:
    return chunk.column(name).to_numpy()


def test_is_a_source_with_declared_fields_and_types():
    sim = Simulator(SMALL)
    assert isinstance(sim, Source) and sim.has_event_time
    table = next(iter(sim)).table
    assert table.column_names == list(STANDARD_COLUMNS) + [f.name for f in sim.fields[2:]]
    kinds = {f.name: f.kind for f in sim.fields}
    assert kinds == {"user_id": FieldKind.CATEGORICAL, "item_id": FieldKind.CATEGORICAL,
                     "item_category": FieldKind.CATEGORICAL, "user_segment": FieldKind.CATEGORICAL,
                     "hour": FieldKind.CATEGORICAL, "price": FieldKind.DENSE}
    assert table.schema.field("ts").type == pa.float64()
    assert table.schema.field("label").type == pa.float32()
    for name in ("user_id", "item_id", "item_category", "user_segment", "hour"):
        assert table.schema.field(name).type == pa.int64()
    assert set(np.unique(table.column("label").to_numpy())) == {0.0, 1.0}
    assert (table.column("price").to_numpy() > 0).all()


def test_same_seed_same_events_other_seed_other_events():
    a, b = _all(Simulator(SMALL)), _all(Simulator(SMALL))
    assert a.num_rows == SMALL.total_events and a.equals(b)
    other = _all(Simulator(SimulatorConfig(**{**SMALL.__dict__, "seed": 8})))
    assert not np.array_equal(a.column("item_id").to_numpy(), other.column("item_id").to_numpy())


@pytest.mark.parametrize("event", [0, 1, 999, 1_000, 2_345, 4_000, 5_999, 6_000])
def test_seek_gives_the_same_events_as_an_uninterrupted_run(event):
    full = _all(Simulator(SMALL))
    sim = Simulator(SMALL)
    sim.seek({"event": event})
    chunks = list(sim)
    positions = np.concatenate([c.positions for c in chunks]) if chunks else np.zeros(0, np.int64)
    assert positions.tolist() == list(range(event, SMALL.total_events))
    if chunks:
        assert pa.concat_tables([c.table for c in chunks]).equals(full.slice(event))
    assert sim.position() == {"event": SMALL.total_events}


def test_seek_backwards_replays_the_same_state():
    sim = Simulator(SMALL)
    full = _all(sim)
    sim.seek({"event": 1_500})
    assert _all(sim).equals(full.slice(1_500))
    with pytest.raises(ValueError):
        sim.seek({"event": SMALL.total_events + 1})


def test_commit_and_committed_round_trip():
    sim = Simulator(SMALL)
    next(iter(sim))
    assert sim.position() == {"event": 1_000} and sim.committed() == {"event": 0}
    sim.commit(sim.position())
    assert sim.committed() == {"event": 1_000}


def test_ts_non_decreasing_from_start_at_the_configured_rate():
    table = _all(Simulator(SMALL))
    ts = table.column("ts").to_numpy()
    assert (np.diff(ts) >= 0).all() and ts[0] >= SMALL.start_ts
    seconds = SMALL.total_events / SMALL.events_per_second
    assert ts[-1] - SMALL.start_ts == pytest.approx(seconds, rel=0.01)
    hours = ((ts // 3600) % 24).astype(np.int64)
    assert np.array_equal(table.column("hour").to_numpy(), hours)


def test_new_users_and_items_appear_later_and_never_before_they_arrive():
    table = _all(Simulator(SMALL))
    elapsed = table.column("ts").to_numpy() - SMALL.start_ts
    users, items = table.column("user_id").to_numpy(), table.column("item_id").to_numpy()
    assert (users < SMALL.n_users + np.floor(SMALL.new_user_rate * elapsed)).all()
    assert (items < SMALL.n_items + np.floor(SMALL.new_item_rate * elapsed)).all()
    assert (users[:100] < SMALL.n_users).all()
    late = slice(3_000, None)
    assert (users[late] >= SMALL.n_users).sum() > 10 and (items[late] >= SMALL.n_items).sum() > 10


def test_item_popularity_and_user_activity_follow_a_power_law():
    config = SimulatorConfig(n_users=5_000, n_items=5_000, batch_size=50_000, total_events=200_000,
                             new_user_rate=0.0, new_item_rate=0.0)
    table = _all(Simulator(config))
    for name, n in (("item_id", config.n_items), ("user_id", config.n_users)):
        counts = np.sort(np.bincount(table.column(name).to_numpy(), minlength=n))[::-1]
        top, bottom = counts[: n // 100].sum() / counts.sum(), counts[n // 2:].sum() / counts.sum()
        assert top > 0.2, (name, top)  # uniform would give 0.01
        assert bottom < 0.15, (name, bottom)  # uniform would give 0.5


def test_labels_follow_the_oracle_click_probability():
    sim = Simulator(SimulatorConfig(n_users=3_000, n_items=2_000, batch_size=20_000, total_events=60_000))
    scores, labels = [], []
    for chunk in sim:
        scores.append(sim.click_probability(_ids(chunk, "user_id"), _ids(chunk, "item_id")))
        labels.append(_ids(chunk, "label"))
    p, y = np.concatenate(scores), np.concatenate(labels)
    assert _auc(p, y) > 0.7
    assert abs(p.mean() - y.mean()) < 0.01  # calibrated: labels are drawn from p
    high, low = p > np.quantile(p, 0.9), p < np.quantile(p, 0.1)
    assert y[high].mean() > 3 * y[low].mean()


def test_preferences_drift_only_when_drift_is_on():
    users, items = np.arange(200), np.arange(200)
    changes = {}
    for drift in (0.0, 0.1):
        sim = Simulator(SimulatorConfig(n_users=1_000, n_items=1_000, batch_size=5_000, drift=drift))
        stream = iter(sim)
        next(stream)
        before = sim.click_probability(users, items)
        for _ in range(5):
            next(stream)
        changes[drift] = np.abs(sim.click_probability(users, items) - before).mean()
    assert changes[0.0] == 0.0 and changes[0.1] > 0.01


def test_oracle_refuses_unknown_ids():
    sim = Simulator(SMALL)
    with pytest.raises(IndexError):
        sim.click_probability(np.array([10**9]), np.array([0]))


def test_config_rejects_bad_values():
    for bad in ({"n_users": 0}, {"events_per_second": 0.0}, {"drift": -1.0}, {"total_events": -1}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)


_HEX8 = re.compile(r"^[0-9a-f]{8}$")


def _criteo_rows(tmp_path: Path, rows: int, seed: int) -> list[list[str]]:
    path = tmp_path / f"criteo_{seed}.tsv"
    write_criteo_tsv(path, rows=rows, seed=seed)
    return [line.split("\t") for line in path.read_text().split("\n")[:-1]]


def test_criteo_file_has_the_dac_format_and_missing_rates(tmp_path):
    rows = _criteo_rows(tmp_path, 20_000, seed=3)
    assert len(rows) == 20_000 and {len(r) for r in rows} == {40}
    assert {r[0] for r in rows} == {"0", "1"}
    ints = [v for r in rows for v in r[1:14]]
    cats = [v for r in rows for v in r[14:]]
    assert all(v == "" or re.fullmatch(r"-?[0-9]+", v) for v in ints)
    assert all(v == "" or _HEX8.match(v) for v in cats)
    assert ints.count("") / len(ints) == pytest.approx(0.2, abs=0.01)
    assert cats.count("") / len(cats) == pytest.approx(0.1, abs=0.01)
    empty = (np.array(rows) == "").mean(axis=0)
    assert empty[0] == 0 and np.allclose(empty[1:14], 0.2, atol=0.02) and np.allclose(empty[14:], 0.1, atol=0.02)
    assert any(v.startswith("-") for v in ints)
    assert len({r[14] for r in rows if r[14]}) > 100  # C1 (user) has many values


def test_criteo_labels_correlate_with_features_and_the_file_is_deterministic(tmp_path):
    rows = _criteo_rows(tmp_path, 20_000, seed=3)
    label = np.array([int(r[0]) for r in rows])
    i2 = np.array([int(r[2]) if r[2] else 0 for r in rows])
    assert label[i2 > 1].mean() > 2 * label[i2 < -1].mean()  # I2 is the scaled affinity
    assert (tmp_path / "criteo_3.tsv").read_bytes() == _write_again(tmp_path, 3)
    assert _write_again(tmp_path, 4) != (tmp_path / "criteo_3.tsv").read_bytes()


def _write_again(tmp_path: Path, seed: int) -> bytes:
    path = tmp_path / f"again_{seed}.tsv"
    write_criteo_tsv(path, rows=20_000, seed=seed)
    return path.read_bytes()
