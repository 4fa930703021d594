"""`torch.optim.Adagrad`'s step on a model's dense parameters in one numba call, on the
optimizer's own state.

The module path (DeepFM, DCN-v2) steps its dense parameters after every micro-batch. Eager torch
spends about 40 us per parameter on that (a handful of small ops each); on micro-batches of 16
that was a sixth of a DeepFM step. `DenseAdagrad` takes one call over all of them, and one to check
their gradients are finite. Its formula is `fused._adagrad`'s, the fused FM's own. The sums and step
counters stay the optimizer's tensors, so `state_dict` and `load_state_dict` see every step.
It takes a CPU float32 model whose optimizer is plain Adagrad (`fused.plain_adagrad`) with one
parameter group (`DenseAdagrad.fits`). A step where some parameter has no gradient goes to
`optimizer.step()`.

>>> import torch
>>> layer = torch.nn.Linear(3, 1)
>>> optimizer = torch.optim.Adagrad(layer.parameters(), lr=0.1)
>>> step = DenseAdagrad(optimizer)
>>> layer(torch.ones(1, 3)).sum().backward()
>>> before = layer.bias.item()
>>> step.finite(), step.step()
(True, None)
>>> round(before - layer.bias.item(), 4)   # lr * g / sqrt(g^2): the first step is lr
0.1
"""

from __future__ import annotations

import operator

import numba
import numpy as np
import torch

from freshrec.train.fused import _adagrad, plain_adagrad

__all__ = ["DenseAdagrad"]


@numba.njit(nogil=True, cache=True)
def _all_finite(arrays):
    """Whether no value of any of the 1-d `arrays` is NaN or infinite."""
    for array in arrays:
        for x in array:
            if not np.isfinite(x):
                return False
    return True


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _step_all(params, grads, sums, steps, lr, eps):
    """`_adagrad` on each parameter (flat views) with its gradient, sum and step counter."""
    for i in range(len(params)):
        _adagrad(params[i], grads[i], sums[i], steps[i], lr, eps)


class DenseAdagrad:
    """The step and the finiteness check of `optimizer` (a `fits` one) in numba (see the module)."""

    def __init__(self, optimizer: torch.optim.Adagrad) -> None:
        if not self.fits(optimizer):
            raise ValueError("DenseAdagrad takes plain Adagrad over CPU float32 parameters in one group")
        self.optimizer = optimizer
        self.params: list[torch.Tensor] = list(optimizer.param_groups[0]["params"])
        self._tensors: tuple[torch.Tensor, ...] = ()
        self._views: tuple[tuple[np.ndarray, ...], ...] = ()

    @staticmethod
    def fits(optimizer: torch.optim.Optimizer | None) -> bool:
        """Whether `DenseAdagrad` can step `optimizer`."""
        if not plain_adagrad(optimizer) or len(optimizer.param_groups) != 1:
            return False
        return all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
                   for p in optimizer.param_groups[0]["params"])

    def finite(self) -> bool:
        """Whether every gradient there is holds only finite values."""
        grads = tuple(p.grad.numpy().reshape(-1) for p in self.params if p.grad is not None)
        return not grads or _all_finite(grads)

    def step(self) -> None:
        """`optimizer.step()`."""
        if any(p.grad is None for p in self.params):
            self.optimizer.step()
            return
        params, sums, steps = self._state_views()
        group = self.optimizer.param_groups[0]
        _step_all(params, tuple(p.grad.numpy().reshape(-1) for p in self.params), sums, steps,
                  np.float32(group["lr"]), np.float32(group["eps"]))

    def _state_views(self) -> tuple[tuple[np.ndarray, ...], ...]:
        """Flat numpy views of the parameters, their sums and step counters, kept while those
        tensors are (`load_state_dict` replaces the optimizer's)."""
        state = self.optimizer.state
        tensors = (*self.params, *(state[p]["sum"] for p in self.params), *(state[p]["step"] for p in self.params))
        if len(tensors) != len(self._tensors) or any(map(operator.is_not, tensors, self._tensors)):
            n = len(self.params)
            flat = [t.detach().reshape(-1).numpy() for t in tensors]
            self._tensors, self._views = tensors, (tuple(flat[:n]), tuple(flat[n:2 * n]), tuple(flat[2 * n:]))
        return self._views
