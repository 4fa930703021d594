"""Jump consistent hashing: every rank gets a fair share, and a change of world size moves only the
ids that must move."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.cluster import owners

IDS = np.random.default_rng(0).integers(1, 2**62, 200_000, dtype=np.int64)


@pytest.mark.parametrize("world", [1, 2, 3, 5, 16])
def test_every_rank_gets_a_fair_share(world: int) -> None:
    counts = np.bincount(owners(IDS, world), minlength=world)
    assert len(counts) == world and counts.min() > 0.95 * len(IDS) / world
    assert np.array_equal(owners(IDS, world), owners(IDS.copy(), world))   # a function of the id alone


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_growing_by_one_moves_only_the_new_ranks_ids(world: int) -> None:
    before, after = owners(IDS, world), owners(IDS, world + 1)
    moved = before != after
    assert bool((after[moved] == world).all())                    # only to the new rank
    assert abs(moved.mean() - 1 / (world + 1)) < 0.01             # about its fair share


def test_negative_ids_and_bad_worlds() -> None:
    assert set(owners(np.array([-5, -2**63, 0], np.int64), 4).tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="world must be >= 1"):
        owners(IDS, 0)
