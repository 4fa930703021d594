"""Mixed precision in the online trainer: bf16 and fp16 autocast score as fp32 does, and fp16's
step that overflows is scored, not learned. fp16 runs on GPUs (`FP16_DEVICE_TYPES`); its autocast
and gradient scaler do the same arithmetic on the CPU, where these tests let it run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import movielens_batches

from freshrec.models import ModelConfig, build_model
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer, TrainerConfig, online

SEEDS = (0, 1, 2)


@pytest.fixture
def fp16_on_the_cpu(monkeypatch):
    monkeypatch.setattr(online, "FP16_DEVICE_TYPES", frozenset({"cpu"}))


def prequential_auc(name: str, precision: str, specs, batches, seed: int, dtypes: set | None = None) -> float:
    model = build_model(name, specs, ModelConfig(dim=8, seed=seed))
    if dtypes is not None:   # the dtype the deep layers compute in
        model.deep.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    trainer = OnlineTrainer(model, TrainerConfig(precision=precision, seed=seed))
    for batch in batches:   # fp16 may skip a step that overflows (scored, not learned); others none
        assert not trainer.learn(batch)["skipped"] or precision == "fp16"
    return trainer.metrics.summary()["auc"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_autocast_is_within_0_002_auc_of_fp32(name, precision, fp16_on_the_cpu):
    """On MovieLens-100k, the mean over seeds (one run's AUC moves by ~0.001 with any change of its
    arithmetic, fp32 or not: the seeds average that out)."""
    specs, batches = movielens_batches()
    dtypes: set = set()
    fp32 = [prequential_auc(name, "fp32", specs, batches, seed) for seed in SEEDS]
    low = [prequential_auc(name, precision, specs, batches, seed, dtypes) for seed in SEEDS]
    assert dtypes == {online.PRECISIONS[precision]}
    assert min(fp32) > 0.69, "the stream must be learned for the comparison to mean anything"
    assert abs(np.mean(low) - np.mean(fp32)) <= 0.002, (fp32, low)


def test_an_fp16_step_that_overflows_is_scored_not_learned(fp16_on_the_cpu):
    data = stream(rows=4096, batch_size=256)
    trainer = OnlineTrainer(build_model("deepfm", data.specs), TrainerConfig(precision="fp16", seed=3))
    overflows = 0
    for batch in data.batches:
        before = ({k: v.clone() for k, v in trainer.model.state_dict().items()},
                  {name: table.state_dict() for name, table in trainer.model.tables.items()})
        scale = trainer.scaler.get_scale() if trainer.scaler else None
        result = trainer.learn(batch)
        assert result["predictions"] is not None and len(result["predictions"]) == len(batch)
        if result["skipped"]:
            overflows += 1
            assert trainer.scaler.get_scale() == scale / 2   # the scaler backs off
            assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before[0].items())
            for name, table in trainer.model.tables.items():   # scoring admits new ids; no known row moves
                known, after = before[1][name], table.state_dict()
                where = {int(i): n for n, i in enumerate(after["ids"])}
                at = [where[int(i)] for i in known["ids"]]
                for key in ("rows", *(k for k in known if k.startswith("state."))):
                    assert np.array_equal(after[key][at], known[key]), (name, key)
    assert overflows, "the initial scale must overflow once for this test to mean anything"
    assert trainer.skipped_batches == overflows and trainer.metrics.summary()["rows"] == 4096


def test_fp16_and_unknown_precisions_are_refused_on_the_cpu():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TrainerConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8' is not one of"):
        TrainerConfig(precision="int8")


def test_an_fp16_step_whose_rows_alone_overflow_halves_the_scale(fp16_on_the_cpu):
    """The scaler checks the dense gradients; an overflow in the rows' alone must shrink it too, or
    every later step would overflow the same way and nothing be learned again."""
    data = stream(rows=2048, batch_size=256)
    trainer = OnlineTrainer(build_model("deepfm", data.specs), TrainerConfig(precision="fp16", seed=3))
    trainer.learn(data.batches[0])
    served, scale = trainer.model.served_gradients, trainer.scaler.get_scale()

    def overflowing() -> list:
        grads = served()
        next(g for g in grads if g is not None)[0, 0] = float("inf")
        return grads

    trainer.model.served_gradients = overflowing
    assert trainer.learn(data.batches[1])["skipped"] == 1
    assert trainer.scaler.get_scale() == scale / 2 and trainer.scaler.state_dict()["_growth_tracker"] == 0
    del trainer.model.served_gradients
    assert not trainer.learn(data.batches[2])["skipped"]
