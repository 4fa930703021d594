"""A saved trainer continues on this run's device and precision, not the saving run's, and an fp16
trainer with its gradient scale."""

from __future__ import annotations

import torch

from freshrec.engine.trainer_state import load_trainer, save_trainer
from freshrec.models import build_model
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer, TrainerConfig, online


def test_a_restored_trainer_takes_the_placement_it_is_given(tmp_path):
    data = stream(rows=1024, batch_size=512)
    trainer = OnlineTrainer(build_model("deepfm", data.specs), TrainerConfig(precision="bf16", seed=3))
    trainer.learn(data.batches[0])
    save_trainer(trainer, tmp_path)
    assert load_trainer(tmp_path).config.precision == "bf16"
    placed = load_trainer(tmp_path, placement=TrainerConfig(device="cpu", precision="fp32"))
    assert (placed.config.precision, placed.config.device, placed.config.seed) == ("fp32", "cpu", 3)
    assert not placed.learn(data.batches[1])["skipped"]


def test_an_fp16_trainer_continues_with_the_gradient_scale_it_had(tmp_path, monkeypatch):
    """fp16 runs on GPUs; its scaler's arithmetic is the same on the CPU, where it is checked here. A
    restored trainer that started its scale anew would skip the steps that overflow at the initial
    scale, which the uninterrupted trainer learns."""
    monkeypatch.setattr(online, "FP16_DEVICE_TYPES", frozenset({"cpu"}))
    data = stream(rows=4096, batch_size=256)
    trainer = OnlineTrainer(build_model("deepfm", data.specs), TrainerConfig(precision="fp16", seed=3))
    skipped = sum(trainer.learn(batch)["skipped"] for batch in data.batches[:6])
    initial = torch.amp.GradScaler("cpu").get_scale()
    assert skipped and trainer.scaler.get_scale() < initial, "an overflow must have moved the scale"
    save_trainer(trainer, tmp_path)
    restored = load_trainer(tmp_path)
    assert restored.scaler.state_dict() == trainer.scaler.state_dict()
    for batch in data.batches[6:]:
        assert torch.equal(trainer.learn(batch)["predictions"], restored.learn(batch)["predictions"])
    assert restored.scaler.state_dict() == trainer.scaler.state_dict()
