"""A saved trainer continues on this run's device and precision, not the saving run's."""

from __future__ import annotations

from freshrec.engine.trainer_state import load_trainer, save_trainer
from freshrec.models import build_model
from freshrec.testing.models import stream
from freshrec.train import OnlineTrainer, TrainerConfig


def test_a_restored_trainer_takes_the_placement_it_is_given(tmp_path):
    data = stream(rows=1024, batch_size=512)
    trainer = OnlineTrainer(build_model("deepfm", data.specs), TrainerConfig(precision="bf16", seed=3))
    trainer.learn(data.batches[0])
    save_trainer(trainer, tmp_path)
    assert load_trainer(tmp_path).config.precision == "bf16"
    placed = load_trainer(tmp_path, placement=TrainerConfig(device="cpu", precision="fp32"))
    assert (placed.config.precision, placed.config.device, placed.config.seed) == ("fp32", "cpu", 3)
    assert not placed.learn(data.batches[1])["skipped"]
