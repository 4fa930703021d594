"""SparseFeatures / JaggedTensor: KeyedJaggedTensor semantics, validation and split."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.batch import JaggedTensor, SparseFeatures


def _sf() -> SparseFeatures:
    # user: [11], [12], [13]; genres: [5, 6], [], [7]; tags: [], [1, 2, 3], [4]
    return SparseFeatures(["user", "genres", "tags"],
                          torch.tensor([11, 12, 13, 5, 6, 7, 1, 2, 3, 4]),
                          torch.tensor([1, 1, 1, 2, 0, 1, 0, 3, 1], dtype=torch.int32))


def test_kjt_accessors():
    sf = _sf()
    assert sf.keys() == ["user", "genres", "tags"]
    assert sf.stride() == 3
    assert sf.length_per_key() == [3, 3, 4]
    assert sf.offset_per_key() == [0, 3, 6, 10]
    assert sf.values().tolist() == [11, 12, 13, 5, 6, 7, 1, 2, 3, 4]
    assert sf.lengths().tolist() == [1, 1, 1, 2, 0, 1, 0, 3, 1]
    assert sf.offsets().tolist() == [0, 1, 2, 3, 5, 5, 6, 6, 9, 10]
    assert sf.offsets().dtype == torch.int64
    assert repr(sf) == "SparseFeatures(keys=['user', 'genres', 'tags'], stride=3, ids=10)"


def test_keys_returns_a_copy():
    sf = _sf()
    sf.keys().append("x")
    assert sf.keys() == ["user", "genres", "tags"]


def test_getitem_and_to_dict():
    sf = _sf()
    genres = sf["genres"]
    assert isinstance(genres, JaggedTensor)
    assert genres.values.tolist() == [5, 6, 7]
    assert genres.lengths.tolist() == [2, 0, 1]
    assert genres.offsets.tolist() == [0, 2, 2, 3]
    assert genres.to_list() == [[5, 6], [], [7]]
    assert sf["tags"].to_list() == [[], [1, 2, 3], [4]]
    d = sf.to_dict()
    assert list(d) == ["user", "genres", "tags"]
    assert {k: v.to_list() for k, v in d.items()} == {
        "user": [[11], [12], [13]], "genres": [[5, 6], [], [7]], "tags": [[], [1, 2, 3], [4]]}
    with pytest.raises(ValueError):
        sf["missing"]


def test_empty_keys():
    sf = SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32))
    assert sf.stride() == 0 and sf.length_per_key() == [] and sf.offset_per_key() == [0]
    assert sf.to_dict() == {}


def test_zero_rows():
    sf = SparseFeatures(["a", "b"], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32))
    assert sf.stride() == 0 and sf.length_per_key() == [0, 0] and sf["b"].to_list() == []
    assert sf.split(4) == []


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32, torch.float64, torch.uint8])
def test_non_int64_values_raise(dtype):
    with pytest.raises(TypeError, match="int64"):
        SparseFeatures(["a"], torch.tensor([1, 2], dtype=dtype), torch.tensor([1, 1], dtype=torch.int32))


def test_lengths_not_divisible_by_keys_raise():
    with pytest.raises(ValueError, match="3 lengths"):
        SparseFeatures(["a", "b"], torch.tensor([1, 2, 3]), torch.tensor([1, 1, 1], dtype=torch.int32))


def test_lengths_sum_mismatch_raise():
    with pytest.raises(ValueError, match="sum to 3 but there are 2"):
        SparseFeatures(["a"], torch.tensor([1, 2]), torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="sum to 1 but there are 2"):
        SparseFeatures(["a"], torch.tensor([1, 2]), torch.tensor([1, 0], dtype=torch.int32))


def test_check_false_skips_validation():
    sf = SparseFeatures(["a"], torch.tensor([1.0]), torch.tensor([5], dtype=torch.int32), check=False)
    assert sf.keys() == ["a"]


def test_split_docstring_example():
    sf = SparseFeatures(["a", "b"], torch.tensor([1, 2, 3, 4, 5, 6]),
                        torch.tensor([1, 1, 1, 0, 2, 1], dtype=torch.int32))
    parts = sf.split(2)
    assert [(p["a"].to_list(), p["b"].to_list()) for p in parts] == [([[1], [2]], [[], [4, 5]]), ([[3]], [[6]])]
    assert [p.stride() for p in parts] == [2, 1]
    assert [p.values().tolist() for p in parts] == [[1, 2, 4, 5], [3, 6]]
    assert [p.lengths().tolist() for p in parts] == [[1, 1, 0, 2], [1, 1]]


def test_split_larger_than_rows_is_one_part_equal_to_whole():
    sf = _sf()
    for size in (3, 4, 100):
        (part,) = sf.split(size)
        assert part.keys() == sf.keys()
        assert part.values().tolist() == sf.values().tolist()
        assert part.lengths().tolist() == sf.lengths().tolist()


def test_split_size_one():
    sf = _sf()
    parts = sf.split(1)
    assert len(parts) == 3
    assert [p.values().tolist() for p in parts] == [[11, 5, 6], [12, 1, 2, 3], [13, 7, 4]]
    assert [p.lengths().tolist() for p in parts] == [[1, 2, 0], [1, 0, 3], [1, 1, 1]]
    assert all(p.values().dtype == torch.int64 and p.lengths().dtype == torch.int32 for p in parts)


@st.composite
def _features(draw):
    n_keys = draw(st.integers(1, 4))
    rows = draw(st.integers(0, 50))
    lengths = draw(st.lists(st.integers(0, 3), min_size=n_keys * rows, max_size=n_keys * rows))
    total = sum(lengths)
    # distinct ids (so a misplaced id is caught), anywhere in the int64 range
    start = draw(st.integers(-(2**63), 2**63 - 1 - 7919 * 600))
    values = torch.arange(total, dtype=torch.int64) * 7919 + start
    size = draw(st.integers(1, 20))
    keys = [f"k{i}" for i in range(n_keys)]
    return keys, rows, values, torch.tensor(lengths, dtype=torch.int32), size


@settings(max_examples=100, deadline=None)
@given(_features())
def test_split_equals_naive_row_slicing(case):
    keys, rows, values, lengths, size = case
    sf = SparseFeatures(keys, values, lengths)
    whole = {key: sf[key].to_list() for key in keys}
    parts = sf.split(size)
    expected_parts = -(-rows // size)
    assert len(parts) == expected_parts
    assert [p.stride() for p in parts] == [min(size, rows - i * size) for i in range(expected_parts)]
    for i, part in enumerate(parts):
        assert part.keys() == keys
        assert part.values().dtype == torch.int64 and part.lengths().dtype == torch.int32
        assert int(part.lengths().sum()) == part.values().numel()
        for key in keys:
            assert part[key].to_list() == whole[key][i * size: (i + 1) * size]
    for key in keys:
        assert [row for part in parts for row in part[key].to_list()] == whole[key]
    assert sum(p.values().numel() for p in parts) == values.numel()
    if parts:
        assert sorted(torch.cat([p.values() for p in parts]).tolist()) == sorted(values.tolist())


def test_to_cpu_preserves_values():
    sf = _sf()
    moved = sf.to("cpu")
    assert moved.keys() == sf.keys()
    assert torch.equal(moved.values(), sf.values()) and torch.equal(moved.lengths(), sf.lengths())


def test_pin_memory_returns_equal_tensors():
    sf = _sf()
    pinned = sf.pin_memory()
    assert pinned.keys() == sf.keys()
    assert torch.equal(pinned.values(), sf.values()) and torch.equal(pinned.lengths(), sf.lengths())
    if torch.accelerator.is_available():
        assert pinned.values().is_pinned() and pinned.lengths().is_pinned()
