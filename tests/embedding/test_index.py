"""IdIndex: dict semantics under inserts, deletes and resizes; one writer with reader threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.embedding.index import IdIndex, first_occurrences


def test_lookup_insert_delete():
    index = IdIndex(capacity=8)
    index.insert(np.array([5, 9, 13]), np.array([0, 1, 2]))
    assert index.lookup(np.array([13, 5, 9, 4])).tolist() == [2, 0, 1, -1]
    assert index.delete(np.array([9, 4])) == 1
    assert index.lookup(np.array([9, 13])).tolist() == [-1, 2]
    index.insert(np.array([13]), np.array([7]))          # upsert
    assert index.lookup(np.array([13])).tolist() == [7] and len(index) == 2


def test_sentinels_are_never_found():
    index = IdIndex(capacity=8)
    index.insert(np.array([3]), np.array([0]))
    index.delete(np.array([3]))                            # leaves a tombstone (-1) behind
    assert index.lookup(np.array([0, -1, 3])).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="positive"):
        index.insert(np.array([0]), np.array([1]))


def test_grows_and_keeps_load_low():
    index = IdIndex(capacity=8)
    ids = np.arange(1, 100_001, dtype=np.int64) * 7919
    for chunk in np.array_split(ids, 37):
        index.insert(chunk, chunk // 7919)
    assert len(index) == 100_000
    assert len(index) <= 0.6 * index.capacity
    assert (index.lookup(ids) == ids // 7919).all()


def test_resize_drops_tombstones_and_can_shrink():
    index = IdIndex(capacity=1 << 12)
    ids = np.arange(1, 2001, dtype=np.int64)
    index.insert(ids, ids)
    index.delete(ids[:1900])
    index.resize(0)                                        # as small as the live ids allow
    assert index.capacity == 256 and len(index) == 100
    assert (index.lookup(ids[1900:]) == ids[1900:]).all()
    assert (index.lookup(ids[:1900]) == -1).all()


def test_churn_through_tombstones_does_not_fill_the_table():
    index = IdIndex(capacity=64)
    for start in range(1, 20_000, 10):
        ids = np.arange(start, start + 10, dtype=np.int64)
        index.insert(ids, ids)
        index.delete(ids)
    assert len(index) == 0 and index.capacity <= 64


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "delete", "resize"]),
                          st.lists(st.integers(1, 60), max_size=20), st.integers(0, 200)),
                max_size=30))
def test_matches_a_dict(operations):
    index, reference = IdIndex(capacity=8), {}
    for op, ids, n in operations:
        keys = np.array(ids, np.int64)
        if op == "insert":
            rows = np.arange(n, n + len(keys), dtype=np.int64)
            index.insert(keys, rows)
            reference.update(zip(ids, rows.tolist()))
        elif op == "delete":
            assert index.delete(np.unique(keys)) == sum(k in reference for k in set(ids))
            for k in ids:
                reference.pop(k, None)
        else:
            index.resize(n)
        probe = np.arange(1, 61, dtype=np.int64)
        assert index.lookup(probe).tolist() == [reference.get(k, -1) for k in range(1, 61)]
        assert len(index) == len(reference)


def test_readers_never_see_a_wrong_row_while_the_writer_grows():
    """One writer inserts 2M ids (many resizes); readers look up ids published so far."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.unique(rng.integers(1, 1 << 62, 2_000_100)))[:2_000_000]
    rows = rng.permutation(len(ids)).astype(np.int64)
    index = IdIndex(capacity=8)
    index.insert(ids[:1000], rows[:1000])
    published, done, errors, reads = [1000], threading.Event(), [], [0, 0]

    def reader(seed):
        local = np.random.default_rng(seed)
        while not done.is_set():
            upto = published[0]
            pick = local.integers(0, upto, 4096)
            got = index.lookup(ids[pick])
            reads[seed] += 1
            if not (got == rows[pick]).all():
                errors.append(int((got != rows[pick]).sum()))

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    capacities = {index.capacity}
    for start in range(1000, len(ids), 20_000):
        index.insert(ids[start: start + 20_000], rows[start: start + 20_000])
        capacities.add(index.capacity)
        published[0] = min(start + 20_000, len(ids))
    done.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(capacities) >= 6 and min(reads) > 10       # the readers lived through many resizes
    assert (index.lookup(ids) == rows).all()


@pytest.mark.parametrize("count", [0, 1, 7, 5_000])
def test_first_occurrences_is_np_unique_in_order_of_first_sight(count):
    rng = np.random.default_rng(count)
    ids = rng.integers(1, max(count // 3, 2), count).astype(np.int64) * 0x9E3779B1   # repeats, large values
    unique, inverse = first_occurrences(ids)
    assert np.array_equal(unique[inverse], ids)
    sorted_ids, first = np.unique(ids, return_index=True)
    assert np.array_equal(unique, ids[np.sort(first)]) and len(unique) == len(sorted_ids)
