"""Mixed precision in the online trainer: bf16 autocast on the CPU scores as fp32 does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import movielens_batches

from freshrec.models import ModelConfig, build_model
from freshrec.train import OnlineTrainer, TrainerConfig

SEEDS = (0, 1, 2)


def prequential_auc(name: str, precision: str, specs, batches, seed: int, dtypes: set | None = None) -> float:
    model = build_model(name, specs, ModelConfig(dim=8, seed=seed))
    if dtypes is not None:   # the dtype the deep layers compute in
        model.deep.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    trainer = OnlineTrainer(model, TrainerConfig(precision=precision, seed=seed))
    for batch in batches:
        assert not trainer.learn(batch)["skipped"]
    return trainer.metrics.summary()["auc"]


@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_bf16_autocast_is_within_0_002_auc_of_fp32(name):
    """On MovieLens-100k, the mean over seeds (one run's AUC moves by ~0.001 with any change of its
    arithmetic, fp32 or not: the seeds average that out)."""
    specs, batches = movielens_batches()
    dtypes: set = set()
    fp32 = [prequential_auc(name, "fp32", specs, batches, seed) for seed in SEEDS]
    bf16 = [prequential_auc(name, "bf16", specs, batches, seed, dtypes) for seed in SEEDS]
    assert dtypes == {torch.bfloat16}
    assert min(fp32) > 0.69, "the stream must be learned for the comparison to mean anything"
    assert abs(np.mean(bf16) - np.mean(fp32)) <= 0.002, (fp32, bf16)


def test_fp16_and_unknown_precisions_are_refused_on_the_cpu():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TrainerConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8' is not one of"):
        TrainerConfig(precision="int8")
