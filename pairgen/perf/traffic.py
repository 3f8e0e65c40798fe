"""Bytes an eager step moves, the other half of "count before you optimise" (docs/PERFORMANCE.md: floors).

Model: every ATen call reads each tensor it is given and writes each tensor it returns, once, from and to device
memory; view operations (reshape, permute, detach, …) move nothing. So the total is the traffic of the step run
as PyTorch's eager kernels run it, op by op, without fusion or cache reuse: what the kernels the profile shows
have to move. Fused kernels move less; the FLOP count (pairgen.perf.timing) is the other floor. A step cannot take less
than max(FLOPs / peak FLOP rate, bytes / memory bandwidth); the gap between that and the measured time is what
kernel efficiency (not launches, not arithmetic volume) costs.

Counting runs the real step on the CPU (with CPU bf16 autocast where the GPU step uses CUDA bf16 autocast, so
the dtypes, and with them the bytes, match), at two small batch sizes: traffic is affine in the batch (weights
and optimiser state once, activations per sample), so two points extrapolate it exactly to the thesis batch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# datasheet memory bandwidth, TB/s, by GPU name fragment (SXM parts)
GPU_BANDWIDTH_TBS: dict[str, float] = {"H100": 3.35, "H200": 4.8, "A100": 2.0}


class TrafficMode(TorchDispatchMode):
    """While active: `ops` ATen calls that move data and `bytes` they read + write (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            tensors = {id(t): t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)}
            self.ops += 1
            self.bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        return out


def traffic_of(step: Callable[[], Any]) -> int:
    """Bytes `step()` moves under TrafficMode."""
    with TrafficMode() as mode:
        step()
    return mode.bytes


def bytes_at_batch(traffic_at: Callable[[int], int], batch: int, small: tuple[int, int] = (1, 2)) -> float:
    """traffic_at(b) measured at two small batch sizes, extrapolated (affine in b) to `batch`."""
    b1, b2 = small
    t1, t2 = traffic_at(b1), traffic_at(b2)
    per_sample = (t2 - t1) / (b2 - b1)
    return t1 + per_sample * (batch - b1)


def gpu_bandwidth(machine: str) -> float | None:
    """Datasheet bandwidth in bytes/s for a machine string naming an H100 / H200 / A100, else None."""
    return next((tbs * 1e12 for key, tbs in GPU_BANDWIDTH_TBS.items() if key in machine), None)
