"""Count-min sketch and admission policies."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.embedding.admission import (
    CountAdmission,
    CountMinSketch,
    ProbabilisticAdmission,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(1, 10**6), max_size=40), max_size=8), st.integers(4, 64))
def test_sketch_never_undercounts(batches, width):
    sketch, truth = CountMinSketch(width=width, depth=3), Counter()
    for batch in batches:
        sketch.add(np.array(batch, np.int64))
        truth.update(batch)
    keys = np.array(sorted(truth), np.int64)
    assert (sketch.estimate(keys) >= np.array([truth[k] for k in sorted(truth)])).all()


def test_sketch_is_exact_without_collisions_and_bounded():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1 << 62, 100)
    stream = rng.choice(ids, 5000)
    sketch = CountMinSketch(width=1 << 16, depth=4)
    sketch.add(stream)
    truth = Counter(stream.tolist())
    assert sketch.estimate(ids).tolist() == [truth[k] for k in ids.tolist()]
    assert sketch.counters.shape == (4, 1 << 16)


def test_conservative_update_limits_overcounting():
    # 2 columns: collisions everywhere; a plain sketch would hold depth * events in total
    sketch = CountMinSketch(width=2, depth=2)
    ids = np.arange(1, 200, dtype=np.int64)
    heavy, light = ids[0], ids[1:]
    sketch.add(np.full(100, heavy))
    sketch.add(light)
    assert sketch.estimate(np.array([heavy]))[0] >= 100
    assert sketch.counters.sum() < 0.9 * 2 * (100 + len(light))


def test_count_admission_admits_at_the_nth_sighting():
    policy = CountAdmission(admit_after=3, width=1 << 12)
    assert policy.admit(np.array([7, 8])).tolist() == [False, False]
    assert policy.admit(np.array([7, 9, 7])).tolist() == [True, False, True]
    assert policy.admit(np.array([8, 8])).tolist() == [True, True]
    restored = CountAdmission(admit_after=3, width=1 << 12)
    restored.load_state_dict(policy.state_dict())
    assert restored.admit(np.array([9])).tolist() == [False]
    assert restored.admit(np.array([9])).tolist() == [True]


@pytest.mark.parametrize("p", [0.0, 0.25, 0.9, 1.0])
def test_probabilistic_admission_is_per_id_and_near_p(p):
    ids = np.arange(1, 20_001, dtype=np.int64)
    first = ProbabilisticAdmission(p, seed=3).admit(ids)
    assert (ProbabilisticAdmission(p, seed=3).admit(ids) == first).all()   # same id, same answer
    assert first.mean() == pytest.approx(p, abs=0.02)
    other = ProbabilisticAdmission(p, seed=4).admit(ids)
    assert 0 < p < 1 and (other != first).any() or p in (0.0, 1.0)
    assert ProbabilisticAdmission(p).state_dict() == {}
