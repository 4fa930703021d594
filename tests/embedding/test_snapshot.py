"""Snapshots and deltas: a replica bootstrapped from a snapshot and fed deltas equals the live table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.embedding import (
    FTRL,
    Adam,
    DynamicEmbedding,
    TableConfig,
    load_delta,
    load_table,
    save_delta,
    save_table,
)
from freshrec.embedding.snapshot import config_from_json, config_to_json

CONFIG = TableConfig(dim=4, chunk_rows=16, admit_after=2, sketch_width=1 << 12, ttl_seconds=30.0,
                     capacity=150, eviction="lru", optimizer=Adam(lr=0.05), seed=7)


def _contents(table: DynamicEmbedding) -> dict[str, np.ndarray]:
    """The table's rows, state and bookkeeping, ordered by id."""
    state = table.state_dict()
    order = np.argsort(state["ids"])
    return {k: v[order] for k, v in state.items() if len(v) == len(order) and k != "generator"}


def _assert_equal(a: DynamicEmbedding, b: DynamicEmbedding, names=None) -> None:
    left, right = _contents(a), _contents(b)
    assert sorted(left) == sorted(right)
    for name in names or left:
        assert left[name].tobytes() == right[name].tobytes(), name


def _train(table: DynamicEmbedding, steps: range, rng: np.random.Generator) -> None:
    for step in steps:
        ids = (rng.zipf(1.3, 64) % 400 + 1).astype(np.int64)
        slots = table.slots(ids, now=float(step))
        rows = table.gather(slots).requires_grad_()
        (rows.sum(dim=1) - 1.0).pow(2).sum().backward()
        table.apply_gradients(slots, rows.grad)
        if step % 7 == 6:
            table.evict(now=float(step))


def test_save_load_round_trip_and_identical_continuation(tmp_path):
    table = DynamicEmbedding(CONFIG)
    _train(table, range(40), np.random.default_rng(0))
    save_table(table, tmp_path / "t.safetensors")
    copy = load_table(tmp_path / "t.safetensors")
    assert copy.config == CONFIG
    assert (copy.version, copy.admitted, copy.evicted, copy.live) == (
        table.version, table.admitted, table.evicted, table.live)
    _assert_equal(table, copy)
    _train(table, range(40, 80), np.random.default_rng(1))          # new ids, admission, evictions
    _train(copy, range(40, 80), np.random.default_rng(1))
    _assert_equal(table, copy)


def test_replica_fed_deltas_is_bitwise_equal(tmp_path):
    table, rng = DynamicEmbedding(CONFIG), np.random.default_rng(2)
    _train(table, range(25), rng)
    save_table(table, tmp_path / "base.safetensors")
    replica = load_table(tmp_path / "base.safetensors")
    published = table.version
    for start in range(25, 200, 10):
        _train(table, range(start, start + 10), rng)
        table.slots(np.array([10_000 + start]), now=float(start + 10))  # admitted between steps
        table.slots(np.array([10_000 + start]), now=float(start + 10))
        delta = table.delta_since(published)
        save_delta(delta, tmp_path / f"delta-{delta.version}.safetensors")
        replica.apply_delta(load_delta(tmp_path / f"delta-{delta.version}.safetensors"))
        published = delta.version
        assert replica.version == table.version
        _assert_equal(table, replica, ["ids", "rows", "state.m", "state.v", "state.step"])
    assert table.evicted > 100 and len(delta.deleted) > 0


def test_delta_carries_only_rows_written_since():
    table = DynamicEmbedding(TableConfig(dim=2))
    table.apply_gradients(table.slots(np.array([1, 2]), 0.0), torch.ones(2, 2))
    table.apply_gradients(table.slots(np.array([2, 3]), 0.0), torch.ones(2, 2))
    delta = table.delta_since(1)
    assert (delta.since, delta.version, sorted(delta.ids.tolist())) == (1, 2, [2, 3])
    assert set(delta.state) == {"accum"} and delta.rows.shape == (2, 2)


def test_deltas_must_not_leave_a_gap(tmp_path):
    table = DynamicEmbedding(TableConfig(dim=2))
    for _ in range(3):
        table.apply_gradients(table.slots(np.array([1]), 0.0), torch.ones(1, 2))
    replica = DynamicEmbedding(TableConfig(dim=2))
    with pytest.raises(ValueError, match="does not apply"):
        replica.apply_delta(table.delta_since(2))
    save_delta(table.delta_since(0), tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="not a freshrec.embedding.table"):
        load_table(tmp_path / "d.safetensors")


def test_config_json_round_trip_for_every_optimizer():
    for optimizer in (Adam(lr=0.1, beta1=0.8), FTRL(alpha=0.2, l1=1.0)):
        config = TableConfig(dim=8, dtype="bfloat16", capacity=10, optimizer=optimizer)
        assert config_from_json(config_to_json(config)) == config


def test_snapshot_is_not_a_pickle(tmp_path):
    table = DynamicEmbedding(TableConfig(dim=2))
    table.slots(np.array([1, 2]), 0.0)
    save_table(table, tmp_path / "t.safetensors")
    header = (tmp_path / "t.safetensors").read_bytes()[8:200]
    assert header.startswith(b"{") and b"pickle" not in header
