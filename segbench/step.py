"""The U-Net training step (one Adam update on one batch) and what it needs: the loss, the memory format, the
optimiser, autocast. segbench.train runs it in its loop, segbench.graphed replays it as a CUDA graph, and
segbench.perf times it.

Speed choices are explicit arguments with the training defaults (docs/DECISIONS.md has their measurements):
`channels_last` (NHWC activations: oneDNN and cuDNN run these 3×3 convolutions faster) and `fused` Adam (one
kernel over all parameters; the same state_dict either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segbench.presets import SegConfig


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, reduction: str = "mean",
                      row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy. logits float B×C×H×W; masks int64 B×H×W class ids.

    C == 1: sigmoid cross-entropy against (mask > 0); C > 1: softmax cross-entropy. Computed in float32.
    row_weights (float32 B, > 0 in sum; reduction 'mean' only): the weighted mean Σ_b w_b Σ_pixels l / (Σ_b w_b ·
    H·W), so equal weights give the plain mean (SegConfig.synth_weight; None: the plain mean itself).
    """
    logits = logits.float()
    if row_weights is not None:
        per_pixel = segmentation_loss(logits, masks, reduction="none")
        return (per_pixel * row_weights.view(-1, 1, 1)).sum() / (row_weights.sum() * per_pixel[0].numel())
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (masks > 0).float(), reduction=reduction)
    return F.cross_entropy(logits, masks, reduction=reduction)


def row_weights(is_synthetic: torch.Tensor, synth_weight: float) -> torch.Tensor | None:
    """Per-row loss weights float32 B for a batch's is_synthetic bool B: synth_weight on synthetic rows, 1 on real
    ones; None for weight 1 (the plain mean: training exactly as without weights)."""
    if float(synth_weight) == 1.0:
        return None
    return torch.where(is_synthetic, float(synth_weight), 1.0).float()


def memory_format(channels_last: bool = True) -> torch.memory_format:
    """The activations' layout in training: NHWC (channels_last) or NCHW."""
    return torch.channels_last if channels_last else torch.contiguous_format


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = True) -> torch.nn.Module:
    """Move to the device in the training memory format; on CUDA let cuDNN autotune (shapes never change)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model.to(device).to(memory_format=memory_format(channels_last))


def make_optimizer(model: torch.nn.Module, config: SegConfig, fused: bool = True) -> torch.optim.Adam:
    """Adam with the config's lr and betas; `fused`: one kernel over all parameters (same state_dict)."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas), fused=fused or None)


def autocast_for(device: torch.device, amp: bool, cache_enabled: bool = True):
    """bf16 autocast on CUDA when enabled; a no-op context on the CPU (fp32 there). `cache_enabled=False` inside
    CUDA graph capture (PyTorch's CUDA-graph notes: autocast's cast cache must not outlive the capture)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda",
                          cache_enabled=cache_enabled)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, masks: torch.Tensor,
               amp: bool, cache_enabled: bool = True, channels_last: bool = True,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """One optimiser step on a batch (images float32 B×C×H×W in [-1, 1], masks int64 B×H×W) → the loss (a
    detached scalar on the device; no host sync). `model` may be a DistributedDataParallel wrapper.
    `cache_enabled=False`: autocast without its weight-cast cache (CUDA graph capture, segbench.graphed).
    `weights`: per-row loss weights float32 B (segmentation_loss, row_weights), None: the plain mean."""
    images = images.contiguous(memory_format=memory_format(channels_last))
    with autocast_for(images.device, amp, cache_enabled):
        logits = model(images)
    loss = segmentation_loss(logits, masks, row_weights=weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
