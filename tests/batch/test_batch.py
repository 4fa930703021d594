"""Batch: validation, split consistency with its sparse part, device moves and pinning."""

from __future__ import annotations

import pytest
import torch

from freshrec.batch import Batch, SparseFeatures


def _sparse(rows: int) -> SparseFeatures:
    # "user": one id per row (100 + r); "tags": r % 3 ids per row (values 1000 * r + j)
    tags = [[1000 * r + j for j in range(r % 3)] for r in range(rows)]
    values = list(range(100, 100 + rows)) + [v for row in tags for v in row]
    lengths = [1] * rows + [len(row) for row in tags]
    return SparseFeatures(["user", "tags"], torch.tensor(values, dtype=torch.int64),
                          torch.tensor(lengths, dtype=torch.int32))


def _batch(rows: int = 7) -> Batch:
    dense = torch.arange(rows * 2, dtype=torch.float32).view(rows, 2)
    labels = torch.tensor([float(r % 2) for r in range(rows)])
    ts = torch.arange(rows, dtype=torch.float64) + 1_700_000_000.5
    return Batch(_sparse(rows), dense, labels, ts, ("price", "age"))


def test_len_and_fields():
    batch = _batch()
    assert len(batch) == 7
    assert batch.dense_keys == ("price", "age")
    assert batch.sparse.stride() == 7


@pytest.mark.parametrize("dense", [torch.zeros(7, 2, dtype=torch.float64), torch.zeros(7, 2, dtype=torch.float16),
                                   torch.zeros(7), torch.zeros(7, 2, 1), torch.zeros(6, 2)])
def test_dense_dtype_and_shape_errors(dense):
    base = _batch()
    with pytest.raises(ValueError, match="dense must be float32"):
        Batch(base.sparse, dense, base.labels, base.ts, ("price", "age"))


def test_dense_keys_mismatch():
    base = _batch()
    with pytest.raises(ValueError, match="2 dense columns but 1 names"):
        Batch(base.sparse, base.dense, base.labels, base.ts, ("price",))
    with pytest.raises(ValueError, match="2 dense columns but 0 names"):
        Batch(base.sparse, base.dense, base.labels, base.ts)


def test_rows_mismatch():
    base = _batch()
    with pytest.raises(ValueError, match="sparse features have 6 rows, labels 7"):
        Batch(_sparse(6), base.dense, base.labels, base.ts, base.dense_keys)
    with pytest.raises(ValueError, match="6 timestamps for 7 rows"):
        Batch(base.sparse, base.dense, base.labels, base.ts[:6], base.dense_keys)


def test_no_sparse_keys_is_allowed():
    empty = SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32))
    batch = Batch(empty, torch.zeros(3, 0), torch.zeros(3), torch.zeros(3, dtype=torch.float64))
    assert len(batch) == 3


def test_frozen():
    batch = _batch()
    with pytest.raises(AttributeError):
        batch.labels = torch.zeros(7)  # type: ignore[misc]


@pytest.mark.parametrize("rows,size", [(7, 3), (7, 7), (7, 1), (7, 10), (6, 2), (1, 5)])
def test_split_consistent_with_whole(rows, size):
    batch = _batch(rows)
    parts = batch.split(size)
    assert len(parts) == -(-rows // size)
    assert [len(p) for p in parts] == [min(size, rows - s) for s in range(0, rows, size)]
    for i, part in enumerate(parts):
        lo, hi = i * size, min((i + 1) * size, rows)
        assert part.dense_keys == batch.dense_keys
        assert part.sparse.stride() == len(part) == hi - lo
        assert torch.equal(part.dense, batch.dense[lo:hi])
        assert torch.equal(part.labels, batch.labels[lo:hi])
        assert torch.equal(part.ts, batch.ts[lo:hi]) and part.ts.dtype == torch.float64
        for key in batch.sparse.keys():
            assert part.sparse[key].to_list() == batch.sparse[key].to_list()[lo:hi]
            # row r of "user" is 100 + r: the sparse rows line up with the dense rows
        assert part.sparse["user"].values.tolist() == list(range(100 + lo, 100 + hi))
    assert torch.equal(torch.cat([p.labels for p in parts]), batch.labels)


def test_split_empty_batch():
    assert _batch(0).split(4) == [] and _batch(0).split(4, window=1.0) == []


def _time_cuts(ts: list[float], size: int, window: float) -> list[int]:
    """The rule written plainly: a micro-batch starts at a row `size` rows or `window` of event
    time after the first row of the current one."""
    sizes, start = [], 0
    for i in range(1, len(ts)):
        if i - start >= size or ts[i] - ts[start] >= window:
            sizes.append(i - start)
            start = i
    return sizes + [len(ts) - start] if ts else []


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size, window", [(4, 3.0), (1, 3.0), (50, 0.5), (50, 1e9), (3, 0.0)])
def test_split_by_event_time_follows_the_rule_and_keeps_every_row_in_order(seed, size, window):
    rows = 40
    torch.manual_seed(seed)
    gaps = torch.distributions.Exponential(1.0).sample((rows,)) if seed else torch.ones(rows)
    ts = (torch.cumsum(gaps, 0) + torch.randn(rows) * 0.5).double()   # bursts, gaps and some disorder
    base = _batch(rows)
    batch = Batch(base.sparse, base.dense, base.labels, ts, base.dense_keys)
    parts = batch.split(size, window=window)
    assert [len(p) for p in parts] == _time_cuts(ts.tolist(), size, window)
    assert torch.equal(torch.cat([p.ts for p in parts]), ts) and torch.equal(torch.cat([p.dense for p in parts]),
                                                                           batch.dense)
    for key in batch.sparse.keys():
        assert [row for p in parts for row in p.sparse[key].to_list()] == batch.sparse[key].to_list()
    assert all(p.ts[1:].max() - p.ts[0] < window for p in parts if len(p) > 1)


def test_to_cpu_preserves_values():
    batch = _batch()
    moved = batch.to("cpu")
    assert moved.dense_keys == batch.dense_keys
    assert torch.equal(moved.dense, batch.dense) and torch.equal(moved.labels, batch.labels)
    assert torch.equal(moved.ts, batch.ts) and moved.ts.dtype == torch.float64
    assert torch.equal(moved.sparse.values(), batch.sparse.values())
    assert torch.equal(moved.sparse.lengths(), batch.sparse.lengths())
    assert moved.sparse.keys() == batch.sparse.keys()


def test_pin_memory_returns_equal_tensors():
    batch = _batch()
    pinned = batch.pin_memory()
    assert pinned.dense_keys == batch.dense_keys
    for a, b in [(pinned.dense, batch.dense), (pinned.labels, batch.labels), (pinned.ts, batch.ts),
                 (pinned.sparse.values(), batch.sparse.values()),
                 (pinned.sparse.lengths(), batch.sparse.lengths())]:
        assert torch.equal(a, b) and a.dtype == b.dtype
        if torch.accelerator.is_available():
            assert a.is_pinned()


def test_split_dense_only_batch_keeps_rows():
    empty = SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32))
    batch = Batch(empty, torch.arange(3, dtype=torch.float32).view(3, 1), torch.zeros(3),
                  torch.zeros(3, dtype=torch.float64), ("price",))
    assert [len(p) for p in batch.split(2)] == [2, 1]


def test_targets_travel_with_their_rows():
    batch = _batch(7)
    rated = Batch(batch.sparse, batch.dense, batch.labels, batch.ts, batch.dense_keys,
                  torch.tensor([1.0, 5.0, float("nan"), 4.0, 2.0, 3.0, 5.0]))
    parts = rated.split(3)
    assert [p.targets.tolist()[0] for p in parts] == [1.0, 4.0, 5.0]
    assert torch.allclose(torch.cat([p.targets for p in parts]), rated.targets, equal_nan=True)
    assert torch.allclose(rated.to("cpu").targets, rated.targets, equal_nan=True)
    assert torch.allclose(rated.pin_memory().targets, rated.targets, equal_nan=True)
    assert all(p.targets is None for p in batch.split(3)) and batch.to("cpu").targets is None


@pytest.mark.parametrize("targets", [torch.zeros(6), torch.zeros(7, dtype=torch.float64), torch.zeros(7, 1)])
def test_targets_of_the_wrong_shape_or_dtype_are_refused(targets):
    batch = _batch(7)
    with pytest.raises(ValueError, match="targets must be float32"):
        Batch(batch.sparse, batch.dense, batch.labels, batch.ts, batch.dense_keys, targets)
