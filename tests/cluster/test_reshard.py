"""Resharding keeps every row whole: its values, optimizer state, sightings and last event time go
to its new owner; admission sketches add up; nothing is lost or doubled."""

from __future__ import annotations

import numpy as np
import torch

from freshrec.cluster import owners
from freshrec.cluster.reshard import merged_table_state, replace_tables
from freshrec.embedding import DynamicEmbedding, TableConfig
from freshrec.embedding.optimizers import Adagrad

IDS = np.arange(1, 2001, dtype=np.int64) * 104729


def _shards(world: int, admit_after: int = 1) -> list[DynamicEmbedding]:
    config = TableConfig(dim=4, optimizer=Adagrad(lr=0.1), admit_after=admit_after)
    shards = [DynamicEmbedding(config) for _ in range(world)]
    for rank, shard in enumerate(shards):
        mine = IDS[owners(IDS, world) == rank]
        for now in (1.0, 2.0):
            slots = shard.slots(mine, now=now)
            shard.apply_gradients(slots, torch.randn(len(mine), 4))
    return shards


def _by_id(states: list[dict]) -> dict[str, np.ndarray]:
    keys = [k for k in states[0] if k in ("ids", "rows", "counts", "last_seen") or k.startswith("state.")]
    whole = {k: np.concatenate([s[k] for s in states]) for k in keys}
    order = np.argsort(whole["ids"])
    return {k: v[order] for k, v in whole.items()}


def test_two_to_three_to_two_keeps_every_row_and_its_state() -> None:
    two = [s.state_dict() for s in _shards(2)]
    three = [merged_table_state(two, rank, 3) for rank in range(3)]
    back = [merged_table_state(three, rank, 2) for rank in range(2)]
    for states, world in ((three, 3), (back, 2)):
        for rank, state in enumerate(states):
            assert bool((owners(state["ids"], world) == rank).all())
        merged, original = _by_id(states), _by_id(two)
        assert set(merged) == set(original) and "state.accum" in merged
        for key, value in original.items():
            assert np.array_equal(merged[key], value), key
    assert [len(s["ids"]) for s in back] == [len(s["ids"]) for s in two]


def test_a_table_filled_from_a_merged_state_serves_the_same_rows() -> None:
    two = [s.state_dict() for s in _shards(2)]
    tables = {"t": DynamicEmbedding(TableConfig(dim=4, optimizer=Adagrad(lr=0.1)))}
    replace_tables(tables, {"t": merged_table_state(two, 0, 1)})
    whole = _by_id(two)
    rows = tables["t"].gather(tables["t"].slots(whole["ids"], now=3.0, train=False))
    assert torch.equal(rows, torch.from_numpy(whole["rows"])) and tables["t"].live == len(IDS)


def test_admission_sketches_add_up() -> None:
    two = [s.state_dict() for s in _shards(2, admit_after=3)]
    merged = merged_table_state(two, 0, 1)
    assert np.array_equal(merged["admission.sketch"], two[0]["admission.sketch"] + two[1]["admission.sketch"])
