"""DynamicEmbedding against a plain-dict reference: admission, TTL and capacity eviction, resizes."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.embedding import SGD, Adagrad, DynamicEmbedding, TableConfig

DIM = 3
PROBE = np.arange(1, 31, dtype=np.int64)


class Reference:
    """The table's semantics with dicts: exact counts, zero init, SGD with lr=1."""

    def __init__(self, config: TableConfig) -> None:
        self.config = config
        self.seen = Counter()                       # sightings while without a row
        self.values, self.counts, self.last_seen = {}, {}, {}
        self.admitted = self.evicted = 0

    def train(self, ids: list[int], now: float) -> None:
        batch = Counter(ids)
        for key, n in batch.items():
            if key not in self.values:
                self.seen[key] += n
                if self.seen[key] >= self.config.admit_after:
                    self.values[key] = np.zeros(DIM, np.float32)
                    self.counts[key], self.last_seen[key] = 0, now
                    self.admitted += 1
            if key in self.values:
                self.counts[key] += n
                self.last_seen[key] = max(self.last_seen[key], now)
                self.values[key] -= np.float32(sum(_grad(key) for _ in range(n)))

    def evict(self, now: float) -> int:
        doomed = set()
        if self.config.ttl_seconds is not None:
            doomed = {k for k, t in self.last_seen.items() if t < now - self.config.ttl_seconds}
        alive = [k for k in self.values if k not in doomed]
        if self.config.capacity is not None and len(alive) > self.config.capacity:
            if self.config.eviction == "lfu":
                alive.sort(key=lambda k: (self.counts[k], self.last_seen[k], k))
            else:
                alive.sort(key=lambda k: (self.last_seen[k], k))
            doomed |= set(alive[: len(alive) - self.config.capacity])
        for key in doomed:
            del self.values[key], self.counts[key], self.last_seen[key]
        self.evicted += len(doomed)
        return len(doomed)


def _grad(key: int) -> float:
    return float(key % 5 + 1)


def _check(table: DynamicEmbedding, reference: Reference) -> None:
    slots = table.slots(PROBE, now=0.0, train=False)
    live = [k for k in PROBE.tolist() if k in reference.values]
    assert [int(k) for k in PROBE[slots >= 0]] == live
    assert len(set(slots[slots >= 0].tolist())) == len(live)          # no two live ids share a row
    expected = np.stack([reference.values.get(k, np.zeros(DIM, np.float32)) for k in PROBE.tolist()])
    assert table.gather(slots).numpy().tolist() == expected.tolist()
    assert (table.admitted, table.evicted, table.live) == (
        reference.admitted, reference.evicted, len(reference.values))
    assert table.live == table.admitted - table.evicted


operation = st.one_of(
    st.tuples(st.just("train"), st.lists(st.integers(1, 12), max_size=12), st.integers(0, 3)),
    st.tuples(st.just("evict"), st.just([]), st.integers(0, 4)),
    st.tuples(st.just("resize"), st.just([]), st.integers(0, 64)))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.sampled_from([None, 4.0]), st.sampled_from([None, 3, 10]),
       st.sampled_from(["lfu", "lru"]), st.lists(operation, max_size=25))
def test_matches_a_dict_reference(admit_after, ttl, capacity, eviction, operations):
    config = TableConfig(dim=DIM, initializer="zeros", chunk_rows=4, admit_after=admit_after,
                         sketch_width=1 << 16, ttl_seconds=ttl, capacity=capacity, eviction=eviction,
                         optimizer=SGD(lr=1.0))
    table, reference, now = DynamicEmbedding(config), Reference(config), 0.0
    for op, ids, n in operations:
        if op == "train":
            now += n
            slots = table.slots(np.array(ids, np.int64), now)
            table.apply_gradients(slots, torch.tensor([[_grad(k)] * DIM for k in ids]).view(-1, DIM))
            reference.train(ids, now)
        elif op == "evict":
            now += n
            assert table.evict(now) == reference.evict(now)
        else:
            table._s.index.resize(n)
        _check(table, reference)


def _sighted(config: TableConfig, sightings: list[tuple[int, float]]) -> DynamicEmbedding:
    table = DynamicEmbedding(config)
    for key, now in sightings:
        table.slots(np.array([key]), now)
    return table


def _live(table: DynamicEmbedding, ids: list[int]) -> list[int]:
    return [k for k, s in zip(ids, table.slots(np.array(ids), 0.0, train=False)) if s >= 0]


# id: sightings at times -> A=1: one at 5; B=2: two, last at 1; C=3: two, last at 2; D=4: five
_SIGHTINGS = [(1, 5.0), (2, 0.0), (2, 1.0), (3, 0.0), (3, 2.0)] + [(4, 0.0)] * 5


def test_lfu_evicts_fewest_sightings_then_oldest_then_smallest_id():
    table = _sighted(TableConfig(dim=2, capacity=2, eviction="lfu"), _SIGHTINGS)
    assert table.evict(now=6.0) == 2 and _live(table, [1, 2, 3, 4]) == [3, 4]


def test_lru_evicts_oldest_then_smallest_id():
    table = _sighted(TableConfig(dim=2, capacity=2, eviction="lru"), _SIGHTINGS + [(5, 0.0)])
    assert table.evict(now=6.0) == 3 and _live(table, [1, 2, 3, 4, 5]) == [1, 3]


def test_ttl_keeps_rows_seen_exactly_ttl_ago():
    table = _sighted(TableConfig(dim=2, ttl_seconds=3.0), _SIGHTINGS)
    assert table.evict(now=5.0) == 2 and _live(table, [1, 2, 3, 4]) == [1, 3]
    slots = table.slots(np.array([2]), now=5.0)              # back with a fresh row
    assert slots[0] >= 0 and table.admitted == 5 and table.evicted == 2


def test_lookup_without_training_neither_inserts_nor_counts():
    table = DynamicEmbedding(TableConfig(dim=2, admit_after=2))
    ids = np.array([5, 5, 6])
    for _ in range(3):
        assert table.slots(ids, now=0.0, train=False).tolist() == [-1, -1, -1]
    assert table.slots(np.array([5]), now=0.0).tolist() == [-1]          # first counted sighting
    assert table.slots(np.array([5]), now=0.0).tolist() == [0] and table.live == 1


def test_unknown_ids_read_zeros_and_take_no_update():
    table = DynamicEmbedding(TableConfig(dim=2, admit_after=5, optimizer=SGD(lr=1.0)))
    slots = table.slots(np.array([8, 9]), now=0.0)
    table.apply_gradients(slots, torch.ones(2, 2))
    assert slots.tolist() == [-1, -1] and table.gather(slots).abs().sum() == 0 and table.version == 1
    with pytest.raises(ValueError, match="positive"):
        table.slots(np.array([0]), now=0.0)


def test_probability_admission_is_fixed_per_id():
    table = DynamicEmbedding(TableConfig(dim=2, admission="probability", admit_probability=0.5))
    ids = np.arange(1, 2001, dtype=np.int64)
    first = table.slots(ids, now=0.0) >= 0
    second = table.slots(ids, now=1.0) >= 0
    assert (first == second).all() and 0.4 < first.mean() < 0.6


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_adagrad_rows_match_torch_sparse_adagrad():
    config = TableConfig(dim=4, init_std=0.1, optimizer=Adagrad(lr=0.1))
    table = DynamicEmbedding(config)
    ids = np.array([3, 9, 3, 4])
    slots = table.slots(ids, now=0.0)
    reference = torch.nn.Embedding(3, 4, sparse=True)
    unique = np.unique(ids)
    reference.weight.data = table.gather(table.slots(unique, 0.0, train=False)).clone()
    optimizer = torch.optim.Adagrad(reference.parameters(), lr=0.1)
    target = torch.randn(4, 4)
    for _ in range(3):
        rows = table.gather(slots).requires_grad_()
        ((rows * target).sum() ** 2).backward()
        table.apply_gradients(slots, rows.grad)
        optimizer.zero_grad()
        ((reference(torch.from_numpy(np.searchsorted(unique, ids))) * target).sum() ** 2).backward()
        optimizer.step()
    got = table.gather(table.slots(unique, 0.0, train=False))
    torch.testing.assert_close(got, reference.weight.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_rows(dtype):
    table = DynamicEmbedding(TableConfig(dim=4, dtype=dtype, initializer="zeros", optimizer=SGD(lr=0.5)))
    slots = table.slots(np.array([1, 2]), now=0.0)
    table.apply_gradients(slots, torch.ones(2, 4))
    assert table.gather(slots).tolist() == [[-0.5] * 4] * 2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_rows_keep_float32_state_and_learn_as_float32_rows(dtype):
    def learned(row_dtype):
        optimizer = Adagrad(lr=0.1, initial_accumulator=0.1)
        table = DynamicEmbedding(TableConfig(dim=4, dtype=row_dtype, optimizer=optimizer))
        rng = np.random.default_rng(0)
        for step in range(20):
            ids = rng.integers(1, 30, 16)
            table.apply_gradients(table.slots(ids, now=float(step)), torch.from_numpy(rng.normal(size=(16, 4))).float())
        return table.state_dict()

    full, half = learned("float32"), learned(dtype)
    assert full["ids"].tolist() == half["ids"].tolist()
    assert half["state.accum"].dtype == np.float32
    np.testing.assert_allclose(half["state.accum"], full["state.accum"], rtol=1e-5)
    np.testing.assert_allclose(half["rows"], full["rows"], atol=0.02)   # 16-bit rounding of each stored row


def test_config_is_checked_and_state_is_lazy():
    with pytest.raises(ValueError, match="eviction"):
        TableConfig(eviction="fifo")
    with pytest.raises(ValueError, match="admit_probability"):
        TableConfig(admit_probability=2.0)
    table = DynamicEmbedding(TableConfig())
    assert table._built is None and table.live == 0 and table._built is not None


def test_memory_per_live_id_is_under_twice_the_raw_bytes():
    table = DynamicEmbedding(TableConfig(dim=16, optimizer=Adagrad()))
    ids = np.random.default_rng(0).integers(1, 1 << 62, 250_000)
    for chunk in np.array_split(ids, 50):
        table.slots(chunk, now=0.0)
    raw = 16 * 4 * 2                                             # row + Adagrad accumulator
    assert table.nbytes / table.live < 2 * raw


def test_readers_see_stable_rows_while_the_writer_grows_the_table():
    table = DynamicEmbedding(TableConfig(dim=8, chunk_rows=1024))
    known = np.arange(1, 1001, dtype=np.int64)
    expected = table.gather(table.slots(known, now=0.0)).clone()
    done, errors = threading.Event(), []

    def reader():
        while not done.is_set():
            if not torch.equal(table.gather(table.slots(known, 0.0, train=False)), expected):
                errors.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    for start in range(10_000, 400_000, 10_000):
        table.slots(np.arange(start, start + 10_000, dtype=np.int64), now=1.0)
    done.set()
    thread.join()
    assert errors == [] and table.live == 391_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rows_on_cuda_with_the_index_on_the_host():
    table = DynamicEmbedding(TableConfig(dim=4, device="cuda", initializer="zeros", optimizer=SGD(lr=1.0)))
    slots = table.slots(np.array([3, 4, 3]), now=0.0)
    table.apply_gradients(slots, torch.ones(3, 4, device="cuda"))
    rows = table.gather(np.append(slots, -1))
    assert rows.device.type == "cuda"
    assert rows.cpu().tolist() == [[-2.0] * 4, [-1.0] * 4, [-2.0] * 4, [0.0] * 4]
