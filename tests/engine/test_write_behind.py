"""Checkpoints and deltas written behind the trainer (`WriteBehind`): an increment captured while the
trainer goes on learning restores what the trainer held at the capture; a checkpoint whose log mark
never came is dropped with the increments on it and the next one is whole; a delta whose write fails
is counted and healed by a full snapshot, which the servers load."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from freshrec._durable import WriteBehind
from freshrec.engine.checkpoint import Checkpoint, CheckpointStore
from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.engine.trainer_state import base_of
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.serve import ModelService
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer

SPECS = default_specs(Simulator.fields, dim=4)


def _stream(count: int, seed: int = 4) -> tuple[list, list]:
    sim = Simulator(SimulatorConfig(batch_size=300, total_events=300 * count, seed=seed))
    chunks = list(sim)
    pipeline = FeaturePipeline(SPECS)
    return chunks, [pipeline.build(chunk) for chunk in chunks]


def test_an_increment_written_behind_holds_the_trainer_as_it_was_at_the_capture(tmp_path: Path) -> None:
    _, batches = _stream(8)
    trainer = OnlineTrainer(build_model("fm", SPECS, ModelConfig(dim=4)))
    store, writes = CheckpointStore(tmp_path, full_every=5), WriteBehind()
    gate, durable = threading.Event(), []
    trainer.learn(batches[0])
    store.save_behind(Checkpoint(1, {"row": 1}, trainer), writes, lambda: True, lambda: durable.append(1))
    assert durable == [1] and base_of(store.path(1)) is None            # whole: written at once
    for step in (2, 3):
        trainer.learn(batches[step - 1])
        store.save_behind(Checkpoint(step, {"row": step}, trainer), writes, gate.wait, lambda s=step: durable.append(s))
    expected = [trainer.learn(batch)["predictions"] for batch in batches[3:6]]   # learns on while 2 and 3 wait
    assert durable == [1] and store.steps() == [1]
    gate.set()
    writes.close()
    assert durable == [1, 2, 3] and [base_of(store.path(s)) for s in (2, 3)] == [1, 2]
    restored = store.latest()
    assert restored.position == {"row": 3}
    for batch, want in zip(batches[3:6], expected, strict=True):
        assert torch.equal(restored.trainer.learn(batch)["predictions"], want)


def test_a_checkpoint_without_its_log_mark_is_dropped_and_the_next_is_whole(tmp_path: Path) -> None:
    _, batches = _stream(5)
    trainer = OnlineTrainer(build_model("lr", SPECS))
    store, writes, durable, gate = CheckpointStore(tmp_path, full_every=10), WriteBehind(), [], threading.Event()

    def no_mark() -> bool:      # the log could not be made durable up to checkpoint 2
        gate.wait()
        return False
    ready = {1: lambda: True, 2: no_mark, 3: lambda: True, 4: lambda: True}
    for step in (1, 2, 3, 4):
        trainer.learn(batches[step - 1])
        store.save_behind(Checkpoint(step, {"row": step}, trainer), writes, ready[step],
                          lambda s=step: durable.append(s))
        if step == 3:           # 3 is queued as an increment on 2 while 2 waits for its mark
            assert _next_base(store) == 3
            gate.set()
            writes.drain()
    writes.close()
    # 2 is dropped and 3 with it (an increment on 2); 4 is whole again
    assert durable == [1, 4] and store.steps() == [1, 4] and base_of(store.path(4)) is None
    assert store.latest().position == {"row": 4}


def _next_base(store: CheckpointStore) -> int:
    """The step the store's next increment would build on."""
    return store._last[0]


def test_a_failed_delta_behind_is_counted_and_healed_by_a_full_snapshot(tmp_path: Path) -> None:
    chunks, batches = _stream(5, seed=3)
    trainer = OnlineTrainer(build_model("fm", SPECS, ModelConfig(dim=4)))
    now, writes = [0.0], WriteBehind()
    config = SyncConfig(sync_interval=1.0, full_interval=1e9, retry_initial=2.0, retry_max=8.0)
    registry = ModelRegistry(tmp_path / "registry")
    publisher = Publisher(registry, trainer.model, Simulator.fields, config, clock=lambda: now[0], writes=writes)

    def learn(i: int, at: float) -> str | None:
        now[0] = at
        trainer.learn(batches[i])
        publisher.observe(chunks[i])
        return publisher.maybe_publish()
    assert learn(0, 0.0) == "full"
    folder = registry.root / "delta"
    folder.rmdir() if folder.is_dir() else None
    folder.write_text("not a folder")                # every delta write fails (even as root)
    assert learn(1, 1.0) == "delta"                  # captured and queued: the write fails behind
    writes.drain()
    assert learn(2, 1.5) is None and publisher.failed == {"full": 0, "delta": 1}   # counted; 2 s backoff
    folder.unlink()                                  # writable again
    assert learn(3, 3.6) == "full"                   # the chain broke: a full snapshot heals it
    publisher.close()
    writes.close()
    assert registry.latest_full() == publisher.version and registry.delta_versions() == []
    service = ModelService(registry)
    service.sync()
    with service.switcher.lease() as replica:
        assert torch.equal(replica.model(batches[4]), trainer.model(batches[4]))
