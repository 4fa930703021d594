"""`Group`: this process's rank in a group of workers on torch.distributed (gloo on the CPU, NCCL on
GPUs), and the few collectives the sharded tables and the group trainer use, with what they cost.

Every rank calls the same collectives in the same order; `Group.join()` joins the group torchrun
(or any launcher setting `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) describes. A group of
one (`Group.alone()`) runs the same code with no process group: each collective is the identity.

>>> import torch
>>> group = Group.alone()
>>> group.all_to_all(torch.arange(3), [3], [3]).tolist(), group.gather(torch.tensor([1.0, 2.0])).tolist()
([0, 1, 2], [[1.0, 2.0]])
>>> group.sum_(torch.ones(2)).tolist(), group.bytes_sent, group.collectives
([1.0, 1.0], 0, 3)
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Group", "in_launched_group"]

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def in_launched_group() -> bool:
    """Whether a launcher (torchrun) started this process as one rank of a group."""
    return all(name in os.environ for name in LAUNCH_ENV)


def _store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """The group's store. Under torchrun's shared agent store (its default) the keys go under a prefix of
    this attempt (the agent's restart count): a group started again after a failure must not find the
    addresses of the ranks before it. That count is the agent's own, so it only names an attempt for
    a single agent; several agents (an elastic group, `--nnodes MIN:MAX`) need
    `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`, where rank 0 hosts a new store, on a new port, for each
    attempt and no prefix is needed."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"   # torchrun's agent serves it
    if agent and int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        raise RuntimeError("a group of several torchrun agents needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in their "
                           "environment (the agents' restart counts differ, so they cannot name an attempt)")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent and rank == 0, timeout=timeout)
    if not agent:
        return store
    return dist.PrefixStore(f"freshrec/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


class Group:
    """Rank `rank` of `world`; tensors exchanged on `device` (the CPU with gloo, the rank's GPU with
    NCCL); `store`: the group's key-value store (this attempt's keys; None alone). `seconds` and
    `collectives` count the time in and the number of collectives, `bytes_sent` the payload this rank
    sent in all-to-alls (ids, rows, gradients)."""

    def __init__(self, rank: int, world: int, device: torch.device | str = "cpu",
                 store: dist.Store | None = None) -> None:
        self.rank, self.world, self.device, self.store = rank, world, torch.device(device), store
        self.seconds, self.collectives, self.bytes_sent = 0.0, 0, 0

    @classmethod
    def alone(cls) -> Group:
        """A group of one: every collective is the identity."""
        return cls(0, 1)

    @classmethod
    def join(cls, timeout_s: float = 600.0, device: str = "cpu") -> Group:
        """Join the group the launcher describes (environment variables): NCCL between the ranks'
        GPUs when `device` is this rank's (`cuda:N`), else gloo on the CPU."""
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        timeout = datetime.timedelta(seconds=timeout_s)
        store = _store(rank, world, timeout)
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world, timeout=timeout)
        return cls(rank, world, torch.device(device), store)

    def leave(self) -> None:
        """Leave the process group (at the end of a run)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()       # no rank leaves while another still talks to it (or to rank 0's store)
            dist.destroy_process_group()
        self.store = None        # its connection closed now, not in the interpreter's teardown

    def _timed(self, started: float) -> None:
        self.seconds += time.perf_counter() - started
        self.collectives += 1

    def all_to_all(self, send: torch.Tensor, send_sizes: Sequence[int], receive_sizes: Sequence[int]) -> torch.Tensor:
        """Rank r's `send[...]` slice number d goes to rank d; returns what every rank sent here, in
        rank order (`receive_sizes[r]` rows from rank r). Sizes count rows of the first dimension."""
        started = time.perf_counter()
        if self.world == 1:
            self._timed(started)
            return send
        send = send.to(self.device).contiguous()
        out = torch.empty((sum(receive_sizes), *send.shape[1:]), dtype=send.dtype, device=self.device)
        dist.all_to_all_single(out, send, list(receive_sizes), list(send_sizes))
        self.bytes_sent += (send.numel() - send[: send_sizes[self.rank]].numel()) * send.element_size() \
            if send.numel() else 0
        self._timed(started)
        return out

    def gather(self, vector: torch.Tensor) -> torch.Tensor:
        """Every rank's `vector` (same shape on all), stacked by rank: `[world, *shape]`."""
        started = time.perf_counter()
        if self.world == 1:
            self._timed(started)
            return vector.unsqueeze(0)
        vector = vector.to(self.device).contiguous()
        out = torch.empty(self.world * vector.numel(), dtype=vector.dtype, device=self.device)
        dist.all_gather_single(out, vector.reshape(-1))
        self._timed(started)
        return out.reshape(self.world, *vector.shape)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place; returns it."""
        return self._reduce_(tensor, dist.ReduceOp.SUM)

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of `tensor` over the ranks, in place; returns it."""
        return self._reduce_(tensor, dist.ReduceOp.MAX)

    def _reduce_(self, tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
        started = time.perf_counter()
        if self.world > 1:
            work = tensor.to(self.device)     # NCCL reduces device tensors only
            dist.all_reduce(work, op)
            if work is not tensor:
                tensor.copy_(work)
        self._timed(started)
        return tensor

    def objects(self, value: Any) -> list[Any]:
        """Every rank's `value` (JSON-like), in rank order."""
        started = time.perf_counter()
        if self.world == 1:
            out = [value]
        else:
            out = [None] * self.world
            dist.all_gather_object(out, value)
        self._timed(started)
        return out

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.world > 1:
            started = time.perf_counter()
            dist.barrier()
            self._timed(started)

    def cost(self) -> dict:
        """Time in collectives, how many, and the bytes this rank sent in all-to-alls."""
        return {"collective_seconds": self.seconds, "collectives": self.collectives, "bytes_sent": self.bytes_sent}
