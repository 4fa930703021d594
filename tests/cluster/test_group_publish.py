"""`GroupPublisher`: rank 0 of 2 publishes what the group votes for, at the version it agrees on.
The other rank's votes are scripted (the all-reduce's maximum with them), so each case is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freshrec.cluster.publish import GroupPublisher
from freshrec.engine.sync import SyncConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import build_model
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer

NOTHING, DELTA, FULL = 0, 1, 2


class _OtherRank:
    """Rank 0 of two; the vote of rank 1 comes from `votes`: (kind, broken, waiting, version)."""

    rank, world = 0, 2

    def __init__(self) -> None:
        self.votes: list[tuple[int, int, int, int]] = []

    def max_(self, values: torch.Tensor) -> torch.Tensor:
        return torch.maximum(values, torch.tensor(self.votes.pop(0), dtype=values.dtype))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rank0(tmp_path: Path):
    sim = Simulator(SimulatorConfig(batch_size=128, total_events=1024, seed=1))
    specs = default_specs(sim.fields, dim=4)
    trainer, pipeline = OnlineTrainer(build_model("fm", specs)), FeaturePipeline(specs)
    group, clock = _OtherRank(), _Clock()
    publisher = GroupPublisher(ModelRegistry(tmp_path, part=(0, 2)), trainer.model, sim.fields, group,
                               SyncConfig(sync_interval=10.0, full_interval=1000.0, retry_initial=5.0), clock)
    chunks = iter(sim)

    def learn() -> None:
        chunk = next(chunks)
        trainer.learn(pipeline.build(chunk))
        publisher.observe(chunk)
    return publisher, group, clock, learn, tmp_path


def _parts(root: Path, kind: str) -> list[str]:
    folder = root / "parts" / kind
    return sorted(f"{v.name[-2:]}/{p.name}" for v in folder.iterdir() for p in v.iterdir()) if folder.is_dir() else []


def _first_version_then_learn(publisher, group, learn) -> None:
    """Version 1 (full) published with rank 1, then one more chunk learned."""
    learn()
    group.votes.append((FULL, 1, 0, 1))
    publisher.maybe_publish()
    learn()


def test_the_first_version_is_full_at_the_highest_version_proposed(rank0) -> None:
    publisher, group, _, learn, root = rank0
    learn()
    group.votes.append((FULL, 1, 0, 7))        # rank 1 saw a version 6 somewhere
    assert publisher.maybe_publish() == "full"
    assert _parts(root, "full") == ["07/part-0-of-2"] and publisher.version == 7


def test_a_delta_another_rank_wants_is_published_here_too(rank0) -> None:
    publisher, group, _, learn, root = rank0
    _first_version_then_learn(publisher, group, learn)
    group.votes.append((NOTHING, 0, 0, 2))     # neither is due: this rank's clock has not moved
    assert publisher.maybe_publish() is None
    group.votes.append((DELTA, 0, 0, 2))       # rank 1's clock says a delta is due
    assert publisher.maybe_publish() == "delta"
    assert _parts(root, "delta") == ["02/part-0-of-2"]


def test_nothing_is_published_while_a_rank_waits_to_retry(rank0) -> None:
    publisher, group, clock, learn, root = rank0
    _first_version_then_learn(publisher, group, learn)
    clock.now = 20.0
    group.votes.append((DELTA, 1, 1, 2))       # rank 1's last write failed; it waits for its backoff
    assert publisher.maybe_publish() is None and _parts(root, "delta") == []
    group.votes.append((DELTA, 1, 0, 2))       # its backoff is over: a full snapshot, no delta before it
    assert publisher.maybe_publish() == "full"
    assert _parts(root, "delta") == [] and _parts(root, "full") == ["01/part-0-of-2", "02/part-0-of-2"]


def test_a_failed_write_here_makes_the_next_version_full_and_newer(rank0, monkeypatch) -> None:
    publisher, group, clock, learn, root = rank0
    _first_version_then_learn(publisher, group, learn)
    clock.now = 20.0
    registry = publisher.registry
    real = registry.publish

    def disk_full(version):
        real(version)            # the part lands, but the write reports a failure (its fsync failed)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(registry, "publish", disk_full)
    group.votes.append((DELTA, 0, 0, 2))
    assert publisher.maybe_publish() is None and publisher.failed["delta"] == 1
    monkeypatch.setattr(registry, "publish", real)
    clock.now = 22.0                           # within the backoff: this rank waits
    group.votes.append((NOTHING, 0, 0, 2))
    assert publisher.maybe_publish() is None
    clock.now = 30.0
    group.votes.append((NOTHING, 0, 0, 2))     # this rank wants the delta; being broken, the group goes full
    assert publisher.maybe_publish() == "full"
    assert _parts(root, "full") == ["01/part-0-of-2", "03/part-0-of-2"]   # above the delta 2 that landed
    assert publisher.version == 3


def test_a_registry_handle_for_another_part_is_refused(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(batch_size=128, total_events=128))
    model = build_model("fm", default_specs(sim.fields, dim=4))
    with pytest.raises(ValueError, match=r"rank 0 of 2 publishes with a registry handle for its part, not \(1, 2\)"):
        GroupPublisher(ModelRegistry(tmp_path, part=(1, 2)), model, sim.fields, _OtherRank())
