"""`DenseAdagrad`: torch.optim.Adagrad's step in numba, on the optimizer's own state."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from freshrec.train.dense_step import DenseAdagrad


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))


def _twins(lr: float = 0.05) -> tuple[torch.nn.Module, torch.optim.Adagrad, torch.nn.Module, torch.optim.Adagrad]:
    ours, theirs = _model(), _model()
    return ours, torch.optim.Adagrad(ours.parameters(), lr=lr), theirs, torch.optim.Adagrad(theirs.parameters(), lr=lr)


def _backward(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    model.zero_grad(set_to_none=True)
    model(torch.randn(16, 7, generator=generator)).square().mean().backward()


def test_its_steps_are_torch_adagrads_steps_and_state():
    ours, our_optimizer, theirs, their_optimizer = _twins()
    step = DenseAdagrad(our_optimizer)
    for seed in range(30):
        _backward(ours, seed)
        _backward(theirs, seed)
        assert step.finite()
        step.step()
        their_optimizer.step()
    for mine, other in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, other, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(our_optimizer.state[mine]["sum"], their_optimizer.state[other]["sum"],
                                   rtol=1e-6, atol=1e-7)
        assert float(our_optimizer.state[mine]["step"]) == float(their_optimizer.state[other]["step"]) == 30


def test_a_state_loaded_into_the_optimizer_is_the_one_it_steps():
    ours, our_optimizer, theirs, their_optimizer = _twins()
    step = DenseAdagrad(our_optimizer)
    _backward(ours, 0)
    step.step()   # its views of the first state tensors are made here
    _backward(theirs, 1)
    their_optimizer.step()
    ours.load_state_dict(theirs.state_dict())
    our_optimizer.load_state_dict(copy.deepcopy(their_optimizer.state_dict()))   # new state tensors, not theirs
    _backward(ours, 2)
    _backward(theirs, 2)
    step.step()
    their_optimizer.step()
    for mine, other in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, other, rtol=1e-6, atol=1e-7)
    assert float(our_optimizer.state[next(ours.parameters())]["step"]) == 2


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_gradient_that_is_not_finite_is_seen(bad):
    model = _model()
    step = DenseAdagrad(torch.optim.Adagrad(model.parameters(), lr=0.1))
    _backward(model, 0)
    assert step.finite()
    model[2].bias.grad[0] = bad
    assert not step.finite()


def test_a_parameter_without_a_gradient_takes_the_optimizers_own_step():
    ours, our_optimizer, theirs, their_optimizer = _twins()
    step = DenseAdagrad(our_optimizer)
    for model in (ours, theirs):
        _backward(model, 0)
        model[0].bias.grad = None
    step.step()
    their_optimizer.step()
    for mine, other in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, other, rtol=1e-6, atol=1e-7)


def test_it_takes_only_plain_adagrad_over_cpu_float32_parameters():
    model = _model()
    assert DenseAdagrad.fits(torch.optim.Adagrad(model.parameters()))
    assert not DenseAdagrad.fits(torch.optim.Adagrad(model.parameters(), weight_decay=0.1))
    assert not DenseAdagrad.fits(torch.optim.Adam(model.parameters()))
    assert not DenseAdagrad.fits(torch.optim.Adagrad(_model().double().parameters()))
    assert not DenseAdagrad.fits(None)
    with pytest.raises(ValueError, match="plain Adagrad"):
        DenseAdagrad(torch.optim.SGD(model.parameters(), lr=0.1))
