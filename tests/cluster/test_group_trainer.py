"""A rank of a group learns where and how the run asks: on the group's device, in the run's
precision (a group of one takes the module step one process takes, bf16 autocast included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.cluster import Group, GroupTrainer
from freshrec.models import ModelConfig, build_model
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer, TrainerConfig
from freshrec.train.online import Unit


def _predictions(trainer: OnlineTrainer, batches: list) -> np.ndarray:
    """The scores `trainer` gave the stream before learning each micro-batch."""
    scores = [step["predictions"].numpy() for _, steps, _ in trainer.learn_stream([Unit.of(b, len(b)) for b in batches])
              for step in steps]
    return np.concatenate(scores)


@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_a_rank_learns_in_the_precision_the_run_asks_for(name: str) -> None:
    data = stream(rows=1024, batch_size=128)
    # rows start at zero: a rank admits a batch's new ids in the order of their values, one process in
    # the batch's, so random rows would differ
    model = lambda: build_model(name, data.specs, ModelConfig(dim=4, init_std=0.0))   # noqa: E731
    bf16 = TrainerConfig(precision="bf16", fused=False)
    rank = _predictions(GroupTrainer(model(), bf16, Group.alone()), data.batches)
    alone = _predictions(OnlineTrainer(model(), bf16), data.batches)
    full = _predictions(OnlineTrainer(model(), TrainerConfig(fused=False)), data.batches)
    np.testing.assert_allclose(rank, alone, atol=1e-6)
    assert np.abs(rank - full).max() > 1e-4      # bf16's rounding shows: the forward ran in it


def test_a_rank_learns_on_its_groups_device_whatever_the_config_says() -> None:
    data = stream(rows=256, batch_size=128)
    trainer = GroupTrainer(build_model("fm", data.specs, ModelConfig(dim=4)), TrainerConfig(device="cuda:3"),
                           Group.alone())
    list(trainer.learn_stream([Unit.of(batch, len(batch)) for batch in data.batches]))
    assert trainer.config.device == "cpu" and trainer.model.device == torch.device("cpu")


def test_a_trainer_placed_elsewhere_is_refused_as_a_rank() -> None:
    data = stream(rows=128, batch_size=128)
    trainer = OnlineTrainer(build_model("fm", data.specs, ModelConfig(dim=4)))
    with pytest.raises(ValueError, match="restore it with the group's device"):
        GroupTrainer.adopt(trainer, Group(0, 1, "cuda"))
