"""Activation checkpointing of the deep towers: the same gradients, fewer activations kept."""

from __future__ import annotations

import pytest
import torch

from freshrec.models import build_model
from freshrec.models.base import training_loss
from freshrec.models.dcn import DCNConfig
from freshrec.models.deepfm import DeepFMConfig
from freshrec.testing.models import stream

CONFIGS = {"deepfm": lambda on: DeepFMConfig(dim=8, hidden=(256, 256, 128), checkpoint_towers=on),
           "dcn": lambda on: DCNConfig(dim=8, hidden=(256, 256, 128), cross_layers=3, checkpoint_towers=on)}


def gradients_and_kept_bytes(name: str, checkpointed: bool) -> tuple[dict[str, torch.Tensor], list, int]:
    """One training step's dense and row gradients, and the bytes autograd kept for backward."""
    data = stream(rows=1024, batch_size=512)
    model = build_model(name, data.specs, CONFIGS[name](checkpointed))
    kept = []

    def pack(tensor):
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(data.batches[0], train=True)
        value = training_loss(model, output, data.batches[0])
    value.backward()
    dense = {name: p.grad.clone() for name, p in model.named_parameters()}
    return dense, [g.clone() for g in model.served_gradients()], sum(kept)


@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_checkpointed_towers_give_the_same_gradients_and_keep_fewer_activations(name):
    plain_dense, plain_rows, plain_bytes = gradients_and_kept_bytes(name, False)
    dense, rows, kept = gradients_and_kept_bytes(name, True)
    assert plain_dense.keys() == dense.keys()
    for key in dense:
        assert torch.equal(dense[key], plain_dense[key]), key
    assert all(torch.equal(a, b) for a, b in zip(rows, plain_rows)) and len(rows) == len(plain_rows)
    assert kept < plain_bytes / 2, (kept, plain_bytes)
