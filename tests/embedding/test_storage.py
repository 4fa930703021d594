"""RowStorage: chunked growth without copies, LIFO free list, initializers, gather/scatter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.embedding.storage import RowStorage


def test_growth_appends_chunks_and_never_moves_rows():
    storage = RowStorage(dim=3, chunk_rows=4, initializer="zeros")
    first = storage.allocate(3)
    storage.scatter(first, torch.arange(9.0).view(3, 3))
    address = storage._arrays["rows"].chunks[0].data_ptr()
    storage.allocate(10)
    assert storage.chunks == 4 and storage.high == 13
    assert storage._arrays["rows"].chunks[0].data_ptr() == address
    assert storage.gather(first).tolist() == torch.arange(9.0).view(3, 3).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gather_scatter_across_chunks_match_a_dense_reference(dtype):
    storage = RowStorage(dim=5, state_widths={"accum": 5, "step": 1}, chunk_rows=7, dtype=dtype,
                         initializer="zeros")
    rows = storage.allocate(40)
    rng = np.random.default_rng(0)
    dense = {"rows": np.zeros((40, 5), np.float32), "accum": np.zeros((40, 5), np.float32),
             "step": np.zeros((40, 1), np.float32)}
    for _ in range(5):
        pick = rng.choice(rows, 17, replace=False)
        for name, ref in dense.items():
            values = rng.integers(-8, 8, (17, ref.shape[1])).astype(np.float32)  # exact in fp16/bf16
            storage.scatter(pick, torch.from_numpy(values), name)
            ref[pick] = values
    probe = np.concatenate([rng.integers(0, 40, 50), [-1]])
    for name, ref in dense.items():
        got = storage.gather(probe, name)
        assert got.dtype == torch.float32
        assert got.numpy().tolist() == np.concatenate([ref, np.zeros((1, ref.shape[1]))])[probe].tolist()


def test_free_list_is_lifo_and_reused_rows_are_reinitialized():
    storage = RowStorage(dim=2, state_widths={"accum": 2}, state_init={"accum": 0.1}, chunk_rows=4)
    rows = storage.allocate(6)
    storage.scatter(rows, torch.full((6, 2), 9.0))
    storage.scatter(rows, torch.full((6, 2), 9.0), "accum")
    storage.release(np.array([1, 4]))
    storage.release(np.array([3]))
    assert storage.free == 3
    again = storage.allocate(4)
    assert again.tolist() == [3, 4, 1, 6]
    assert (storage.gather(again).abs() < 1).all()
    assert storage.gather(again, "accum").tolist() == [[pytest.approx(0.1)] * 2] * 4
    assert storage.gather(np.array([0]), "accum").tolist() == [[9.0, 9.0]]


def test_initializers_are_seeded_and_scaled():
    def draw(seed, kind="normal"):
        storage = RowStorage(dim=64, initializer=kind, init_std=0.5, seed=seed, chunk_rows=256)
        return storage.gather(storage.allocate(1000))

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    assert draw(1).std().item() == pytest.approx(0.5, rel=0.05)
    uniform = draw(3, "uniform")
    assert uniform.abs().max() <= 0.5 and uniform.abs().max() > 0.49
    assert (draw(3, "zeros") == 0).all()
    with pytest.raises(ValueError, match="initializer"):
        RowStorage(dim=2, initializer="xavier")


def test_allocate_without_initialize_leaves_rows_to_the_caller():
    storage = RowStorage(dim=2, chunk_rows=4, seed=0)
    storage.allocate(2, initialize=False)
    assert storage.gather(np.array([0, 1])).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_nbytes_counts_every_chunk():
    storage = RowStorage(dim=16, state_widths={"accum": 16}, chunk_rows=1024)
    storage.allocate(1500)
    assert storage.nbytes == 2 * 2 * 1024 * 16 * 4


def test_addresses_are_lent_only_for_host_float32():
    storage = RowStorage(dim=2, state_widths={"accum": 2}, chunk_rows=4)
    storage.allocate(5)
    addresses = storage.addresses()
    assert sorted(addresses) == ["accum", "rows", "seq"]
    assert len(addresses["seq"]) == 0   # no counters: not shared
    assert addresses["rows"].tolist() == [c.data_ptr() for c in storage._arrays["rows"].chunks]
    assert RowStorage(dim=2, dtype=torch.float16).addresses() is None


def test_addresses_taken_while_another_thread_grows_the_storage_agree_on_the_chunks():
    storage = RowStorage(dim=2, state_widths={"accum": 2}, chunk_rows=4)
    storage.allocate(5)
    storage._arrays["rows"].grow(4)   # where `allocate` in another thread has grown the rows, not yet the state
    addresses = storage.addresses()
    assert len(addresses["rows"]) == len(addresses["accum"]) == 2   # the chunks both have: every allocated row
