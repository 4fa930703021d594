"""`OnlineTrainer.learn_stream`: the fused FM resolves later batches' ids in a worker thread, yet
learns exactly what `learn` batch after batch learns; held units see nothing of later ones; bad
batches are counted and the stream goes on."""

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
    rng = np.random.default_rng(seed)
    return [Unit([batch_of(rng, u * per_unit + b) for b in range(per_unit)], hold=u % 4 == 3) for u in range(count)]


def fm_trainer() -> OnlineTrainer:
    trainer = OnlineTrainer(OnlineFM(SPECS, FMConfig(dim=4, lr=0.1, init_std=0.1)))
    assert trainer.config.fused
    return trainer


def table_state(trainer: OnlineTrainer) -> dict:
    return {k: v.copy() for k, v in trainer.model.table.state_dict().items()}


@pytest.mark.parametrize("ahead", [1, 5])
def test_the_stream_learns_what_learn_does_batch_after_batch(ahead):
    """Scores, rows, sightings and dense weights are bitwise those of `learn` called batch by batch."""
    units = units_of(3)
    alone, streamed = fm_trainer(), fm_trainer()
    expected = [alone.learn(b)["predictions"] for unit in units for b in unit.batches]
    got = [step["predictions"] for _, steps, _ in streamed.learn_stream(iter(units), ahead=ahead) for step in steps]
    assert len(got) == len(expected) == 36
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    a, b = table_state(alone), table_state(streamed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert torch.equal(alone.model.dense_weight, streamed.model.dense_weight)
    assert alone.report()["auc"] == streamed.report()["auc"]


def test_a_held_unit_sees_a_model_that_has_seen_exactly_the_units_so_far():
    """At a held unit (its `hold`, or `hold()` asked), the table has no row of a later unit's ids."""
    units = units_of(4)
    trainer = fm_trainer()
    seen, held_at = set(), []
    # ahead=2: the worker is at most 3 items (less than a unit of 4) past the unit just yielded
    for index, (unit, _, held) in enumerate(trainer.learn_stream(iter(units), ahead=2)):
        seen |= {int(i) for b in unit.batches for i in b.sparse.values()}
        if index == 5:
            trainer.hold()   # a publish is due: the worker stops at the end of the unit it is on
        if held:
            held_at.append(index)
            table = trainer.model.table
            live = set(table.state_dict()["ids"][table.state_dict()["ids"] > 0].tolist())
            assert live == seen
    assert held_at == [3, 6, 7, 11]


def test_bad_batches_are_counted_and_the_stream_goes_on():
    """A batch with a label of 7 or other dense columns fails alone: counted, reported, not learned."""
    units = units_of(5, count=2)
    good = units[0].batches[0]
    wrong = Batch(good.sparse, good.dense, torch.full((len(good),), 7.0), good.ts, good.dense_keys)
    other = Batch(good.sparse, good.dense, good.labels, good.ts, ("x9",))
    for trainer in (fm_trainer(), OnlineTrainer(build_model("deepfm", SPECS))):
        stream = [Unit([wrong, other]), *units]
        steps = [s for _, unit_steps, _ in trainer.learn_stream(iter(stream)) for s in unit_steps]
        assert [s.get("error") is not None for s in steps[:2]] == [True, True]
        assert "labels must be 0, 1 or NaN" in steps[0]["error"] and "dense columns" in steps[1]["error"]
        assert all(s.get("error") is None for s in steps[2:]) and trainer.failed_batches == 2
        assert trainer.report()["scored_rows"] == sum(len(b) for u in units for b in u.batches)


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


def test_tiny_batches_learn_in_one_thread():
    """Below `LOOKAHEAD_MIN_ROWS` a row the fused step runs inline: every unit held, no worker."""
    rng = np.random.default_rng(10)
    units = [Unit([batch_of(rng, u, rows=4) for _ in range(3)]) for u in range(4)]
    trainer, alone = fm_trainer(), fm_trainer()
    expected = [alone.learn(b)["predictions"] for unit in units for b in unit.batches]
    seen = []
    for _, steps, held in trainer.learn_stream(iter(units)):
        seen.append((held, lookahead_threads()))
        assert all(torch.equal(s["predictions"], expected.pop(0)) for s in steps)
    assert seen == [(True, [])] * 4 and expected == []
