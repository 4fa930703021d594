"""The staging pool reuses its buffers; the device feed hands batches on in order."""

from __future__ import annotations

import torch

from freshrec.testing.models import stream
from freshrec.train.staging import DeviceFeed, StagingPool


def test_no_buffer_is_allocated_per_batch_after_warm_up():
    data = stream(rows=20_000, batch_size=512)
    parts = [part for batch in data.batches if len(batch) == 512 for part in batch.split([100, 412])]   # two sizes
    pool = StagingPool(pin=False)
    staged = [pool.stage(part) for part in parts[:4]]
    warm = pool.allocations
    for part in parts[4:]:
        copy = pool.stage(part)
        assert torch.equal(copy.labels, part.labels) and torch.equal(copy.dense, part.dense)
        assert torch.equal(copy.sparse.lengths(), part.sparse.lengths())
    assert warm > 0 and pool.allocations == warm
    assert len(parts) > 50 and len(staged) == 4


def test_a_cpu_feed_hands_each_batch_on_as_it_is():
    data = stream(rows=1024, batch_size=256)
    pairs = list(DeviceFeed("cpu")(data.batches))
    assert [host for host, _ in pairs] == data.batches
    assert all(host is moved for host, moved in pairs)
