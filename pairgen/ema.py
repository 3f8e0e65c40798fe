"""Exponential moving average of a module's weights (generator weight averaging, as in StyleGAN2-ADA / BigGAN).

After every optimiser step: ema ← β·ema + (1-β)·w for every parameter; buffers (e.g. batch-norm statistics) are
copied as they are. The averaged copy is what sampling should use; its state_dict goes into checkpoints.

β from a half-life in images (StyleGAN2-ADA's `ema_kimg`): after half_life_kimg·1000 images the old weights
weigh 1/2, so β = 0.5 ** (batch_size / (half_life_kimg · 1000)) — independent of the batch size.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def beta_from_half_life(batch_size: int, half_life_kimg: float) -> float:
    """β per step for a half-life of `half_life_kimg` thousand images at `batch_size` images per step."""
    if batch_size < 1 or half_life_kimg <= 0:
        raise ValueError(f"need batch_size >= 1 and half_life_kimg > 0, got {batch_size}, {half_life_kimg}")
    return 0.5 ** (batch_size / (half_life_kimg * 1000.0))


class EMA:
    """A frozen copy of `module` (same device and dtype) that `update` moves towards the live weights."""

    def __init__(self, module: nn.Module, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EMA beta must be in [0, 1), not {beta}")
        self.beta = beta
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """ema = β·ema + (1-β)·w for each parameter; buffers copied."""
        averaged, live = list(self.module.parameters()), [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(averaged, live, 1.0 - self.beta)   # one fused launch per device, not one per tensor
        buffers = list(self.module.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(module.buffers()))

    def state_dict(self) -> dict[str, Any]:
        """{'beta': float, 'module': the averaged module's state dict} (tensors and floats: weights_only-safe)."""
        return {"beta": self.beta, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        self.module.load_state_dict(state["module"])
