"""torch.distributed helpers shared by `pairgen train`, `pairgen export` and `segbench run` under torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; `init_from_env` then joins the process group
(NCCL when CUDA is available, gloo otherwise) and pins each process to GPU LOCAL_RANK. Without those variables
everything here is a cheap no-op for a single process (rank 0 of 1), so callers never branch on "distributed?".

Gradients are averaged by hand (`all_reduce_grads`) rather than through DistributedDataParallel: the WGAN-GP
critic step runs three forwards and a double backward (create_graph=True) per update, which DDP's reducer does
not support; one flattened all-reduce after backward is exact for any graph and costs the same communication.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """True when a process group is initialised (collectives are then required on every rank)."""
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (idempotent) → (rank, world_size); (0, 1) when not launched.

    Backend: NCCL with CUDA (each rank on cuda:LOCAL_RANK), gloo on CPU.
    """
    if active():
        return dist.get_rank(), dist.get_world_size()
    if not launched() or int(os.environ["WORLD_SIZE"]) < 2:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_rank0() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (after a final barrier, so no rank exits while another still talks to it)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_grads(module: nn.Module, loss: torch.Tensor | None = None) -> torch.Tensor | None:
    """Average every parameter gradient over all ranks in place, in one flattened all-reduce that also carries
    `loss` (a scalar); returns the rank-mean loss (the input unchanged when not distributed).

    A rank without a gradient for a parameter contributes zeros, so every rank ends with the same .grad tensors;
    a NaN/inf on any rank reaches every rank (in the gradients and in the returned loss), so all ranks take the
    same skip decision afterwards. Matches pairgen.step.GradSync.
    """
    if not active():
        return loss
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    parts = [g.reshape(-1) for g in grads]
    if loss is not None:
        parts.append(loss.detach().reshape(1).to(parts[0].dtype if parts else torch.float32))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for param, grad in zip(params, grads):
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        param.grad = grad
        offset += grad.numel()
    return flat[-1] if loss is not None else None


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of rank `src` to every rank (identical start weights)."""
    if active():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a float tensor (a copy; the input is unchanged)."""
    out = values.detach().clone()
    if active():
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def broadcast_object(value: Any, src: int = 0) -> Any:
    """`value` of rank `src` on every rank (a picklable object: paths, floats, small dicts)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """[value of rank 0, value of rank 1, …] on every rank (e.g. per-rank RNG states for a checkpoint)."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def rank_slice(per_rank: int) -> slice:
    """The rows of a global batch (world_size × per_rank rows, rank-major) that this rank trains on."""
    start = rank() * per_rank
    return slice(start, start + per_rank)


def seed_rank(seed: int, rank_: int, step: int = 0) -> None:
    """Give rank `rank_` (> 0) its own torch/numpy streams (z, ε), derived from (seed, rank, step) only."""
    import numpy as np

    torch.manual_seed(seed * 1_000_003 + rank_ * 7_919 + step)
    np.random.seed((seed * 1_000_003 + rank_ * 7_919 + step) % 2**32)


def on_rank0(make: Callable[[], Any]) -> Any:
    """Run `make` on rank 0 only (e.g. create a numbered output dir) and hand its result to every rank."""
    return broadcast_object(make() if rank() == 0 else None)
