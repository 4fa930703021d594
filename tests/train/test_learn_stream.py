"""`OnlineTrainer.learn_stream`: the fused step resolves later units' ids in a worker thread, yet
learns exactly what the fused step learns unit after unit alone; held units see nothing of later
ones; bad micro-batches are counted and the stream goes on."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models import FMConfig, OnlineFM, build_model
from freshrec.train import OnlineTrainer, TrainerConfig, Unit
from freshrec.train.fused import FusedStep
from freshrec.train.lookahead import WORKER_NAME

SPECS = [FeatureSpec("user", FieldKind.CATEGORICAL, dim=4), FeatureSpec("item", FieldKind.CATEGORICAL, dim=4),
         FeatureSpec("x1", FieldKind.DENSE)]


def batch_of(rng: np.random.Generator, step: int, rows: int = 64) -> Batch:
    """Ids mostly new at every step (about 100 a batch), with repeats inside the batch."""
    users = rng.integers(0, 80, rows) + 1_000 * (step + 1)
    items = rng.integers(1, 30, rows)
    values = torch.from_numpy(np.concatenate([users, items]).astype(np.int64))
    sparse = SparseFeatures(["user", "item"], values, torch.ones(2 * rows, dtype=torch.int32))
    return Batch(sparse, torch.from_numpy(rng.normal(size=(rows, 1)).astype(np.float32)),
                 torch.from_numpy(rng.integers(0, 2, rows).astype(np.float32)),
                 torch.full((rows,), float(step), dtype=torch.float64), ("x1",))


def units_of(seed: int, count: int = 12, per_unit: int = 3) -> list[Unit]:
    """Units of `per_unit` micro-batches of 64 rows; every fourth unit held."""
    rng = np.random.default_rng(seed)
    return [Unit.of(batch_of(rng, u, rows=64 * per_unit), 64, hold=u % 4 == 3) for u in range(count)]


def fm_trainer() -> OnlineTrainer:
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4, lr=0.1, init_std=0.1)))
    assert trainer.config.fused
    return trainer


def table_state(trainer: OnlineTrainer) -> dict:
    return {k: v.copy() for k, v in trainer.model.table.state_dict().items()}


@pytest.mark.parametrize("ahead", [1, 5])
def test_the_stream_learns_what_the_fused_step_learns_unit_after_unit(ahead):
    """Scores, rows, sightings and dense weights are bitwise those of the fused step called on each
    unit in turn in one thread."""
    units = units_of(3)
    alone, streamed = fm_trainer(), fm_trainer()
    alone.start()
    step = FusedStep(alone.model, alone.optimizer)
    expected = [step.learn(unit.whole, unit.sizes)[0] for unit in units]
    got = [s["predictions"].numpy() for _, steps, _ in streamed.learn_stream(iter(units), ahead=ahead) for s in steps]
    assert len(got) == len(expected) == 12 and streamed.batches == 36
    assert all(np.array_equal(g, e) for g, e in zip(got, expected))
    a, b = table_state(alone), table_state(streamed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert torch.equal(alone.model.dense_weight, streamed.model.dense_weight)


def test_a_held_unit_sees_a_model_that_has_seen_exactly_the_units_so_far():
    """At a held unit (its `hold`, or `hold()` asked), the table has no row of a later unit's ids."""
    units = units_of(4)
    trainer = fm_trainer()
    seen, held_at = set(), []
    for index, (unit, _, held) in enumerate(trainer.learn_stream(iter(units), ahead=1)):
        seen |= {int(i) for i in unit.whole.sparse.values()}
        if index == 5:
            trainer.hold()   # a publish is due: the worker stops at the end of the unit it is on
        if held:
            held_at.append(index)
            table = trainer.model.table
            live = set(table.state_dict()["ids"][table.state_dict()["ids"] > 0].tolist())
            assert live == seen
    # asked after unit 5, the worker (ahead=1) holds after the unit it is on or the next one that
    # it finishes: 6, 7 (held anyway: its `hold`) or, when it was already waiting at 7, 8
    assert held_at in ([3, 6, 7, 11], [3, 7, 11], [3, 7, 8, 11])


def test_bad_batches_are_counted_and_the_stream_goes_on():
    """A micro-batch with a label of 7, or a chunk with other dense columns, fails alone: counted,
    reported, not learned; the other micro-batches of its unit learn."""
    units = units_of(5, count=2)
    good = units[0].whole
    labels = good.labels.clone()
    labels[70] = 7.0                        # in the second micro-batch of 64
    wrong = Batch(good.sparse, good.dense, labels, good.ts, good.dense_keys)
    other = Batch(good.sparse, good.dense, good.labels, good.ts, ("x9",))
    for trainer in (fm_trainer(), OnlineTrainer(build_model("deepfm", SPECS))):
        stream = [Unit(wrong, units[0].sizes), Unit.of(other, 192), *units]
        steps = [s for _, unit_steps, _ in trainer.learn_stream(iter(stream)) for s in unit_steps]
        errors = [s.get("error") for s in steps[:4]]
        assert [e is not None for e in errors] == [False, True, False, True]
        assert "labels must be 0, 1 or NaN" in errors[1] and "dense columns" in errors[3]
        assert all(s.get("error") is None for s in steps[4:]) and trainer.failed_batches == 2
        assert trainer.report()["scored_rows"] == 128 + sum(len(u.whole) for u in units)


def lookahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER_NAME]


def test_an_error_of_the_stream_reaches_the_caller_and_the_worker_ends():
    units = units_of(7, count=4)

    def broken():
        yield from units[:3]
        raise OSError("the source went away")

    trainer, learned = fm_trainer(), []
    with pytest.raises(OSError, match="the source went away"):
        for unit, _, _ in trainer.learn_stream(broken()):
            learned.append(unit)
    assert learned == units[:3] and lookahead_threads() == []


def test_closing_a_stream_early_stops_its_worker():
    trainer = fm_trainer()
    stream = trainer.learn_stream(iter(units_of(8)), ahead=2)
    next(stream)
    stream.close()
    assert lookahead_threads() == []


def test_the_module_path_takes_the_same_stream():
    """Without the fused step (`fused=False`) every unit is yielded held and learned in order."""
    units = units_of(9, count=3)
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4)), TrainerConfig(fused=False))
    out = list(trainer.learn_stream(iter(units)))
    assert [u for u, _, _ in out] == units and all(held for _, _, held in out)
    assert trainer.batches == 9 and not trainer.fused


def test_a_fused_step_covers_its_units_micro_batches_and_skips_the_non_finite_ones():
    """One step per unit for the fused path; a micro-batch whose gradients are not finite changes
    nothing, its rows score NaN and are not counted in the metrics."""
    units = units_of(10, count=2)
    dense = units[1].whole.dense.clone()
    dense[130, 0] = float("inf")            # in the third micro-batch of 64
    whole = units[1].whole
    units[1] = Unit(Batch(whole.sparse, dense, whole.labels, whole.ts, whole.dense_keys), [64, 64, 64])
    trainer = fm_trainer()
    steps = [s for _, unit_steps, _ in trainer.learn_stream(iter(units)) for s in unit_steps]
    assert [(s["batches"], s["skipped"]) for s in steps] == [(3, 0), (3, 1)]
    scores = steps[1]["predictions"].numpy()
    assert np.isnan(scores[128:]).all() and not np.isnan(scores[:128]).any()
    assert trainer.skipped_batches == 1 and trainer.skipped_rows == 64
    assert trainer.report()["scored_rows"] == 320 and trainer.batches == 6
