"""What the loop does with a trainer's steps: a micro-batch that could not be learned goes to the
dead letters row by row (the others of its chunk are learned); `chunk_scores` gives the chunk's
scores in row order, whether a step covers one micro-batch (the module path) or a whole chunk
(the fused step)."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.batch import Batch
from freshrec.engine.loop import Work, chunk_scores, dead_letter_failures
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer

SPECS = default_specs(Simulator.fields, dim=4)


def chunk_work(bad_row: int | None = None) -> Work:
    """A simulated chunk of 300 events in micro-batches of 100; `bad_row` gets the label 7."""
    examples = next(iter(Simulator(SimulatorConfig(batch_size=300, total_events=300, seed=3))))
    whole = FeaturePipeline(SPECS).build(examples)
    if bad_row is not None:
        labels = whole.labels.clone()
        labels[bad_row] = 7.0
        whole = Batch(whole.sparse, whole.dense, labels, whole.ts, whole.dense_keys)
    return Work(len(examples), examples, whole, whole.sizes(100))


@pytest.mark.parametrize("model", ["fm", "lr", "deepfm"])   # fused, fused, module
def test_a_micro_batch_not_learned_goes_to_the_dead_letters_and_the_others_learn(model):
    trainer = OnlineTrainer(build_model(model, SPECS, ModelConfig(dim=4)))
    work = chunk_work(bad_row=150)
    ((_, steps, _),) = list(trainer.learn_stream([work]))
    sink = MemoryDeadLetters()
    assert dead_letter_failures(work, steps, sink) == 100
    assert {letter.reason for letter in sink.letters} == {"not_learned"}
    assert [letter.position for letter in sink.letters] == work.examples.positions[100:200].tolist()
    assert "labels must be 0, 1 or NaN" in sink.letters[0].detail
    assert trainer.failed_batches == 1 and trainer.report()["scored_rows"] == 200


@pytest.mark.parametrize("model", ["fm", "deepfm"])
def test_chunk_scores_are_the_scores_of_each_micro_batch_in_row_order(model):
    trainer = OnlineTrainer(build_model(model, SPECS, ModelConfig(dim=4)))
    work = chunk_work(bad_row=150)
    ((_, steps, _),) = list(trainer.learn_stream([work]))
    scores = chunk_scores(steps)
    assert len(scores) == 300 and np.isnan(scores[100:200]).all()   # the micro-batch not learned
    assert np.isfinite(scores[:100]).all() and np.isfinite(scores[200:]).all()
    twin = OnlineTrainer(build_model(model, SPECS, ModelConfig(dim=4)))
    first = twin.learn(work.batches[0])["predictions"].numpy()
    np.testing.assert_allclose(scores[:100], first, atol=1e-6)   # scored before it was learned


def test_a_chunk_the_fused_step_fails_on_goes_to_the_dead_letters_whole(monkeypatch):
    """An error inside the fused call fails all the micro-batches it covers, and they stay aligned
    with the chunk's rows."""
    from freshrec.train.fused import FusedStep

    def broken(self, chunk, sizes=None):
        raise RuntimeError("the kernel failed")
    monkeypatch.setattr(FusedStep, "learn_resolved", broken)
    trainer = OnlineTrainer(build_model("fm", SPECS, ModelConfig(dim=4)))
    work = chunk_work()
    ((_, steps, _),) = list(trainer.learn_stream([work]))
    assert [(s["batches"], s["rows"], s["error"]) for s in steps] == [(3, 300, "the kernel failed")]
    assert trainer.failed_batches == trainer.batches == 3
    assert np.isnan(chunk_scores(steps)).all()
    sink = MemoryDeadLetters()
    assert dead_letter_failures(work, steps, sink) == 300 == len(sink.letters)
