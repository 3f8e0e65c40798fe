"""Pair-consistent differentiable augmentation of critic inputs (DiffAugment, Zhao et al. 2020), for pairs.

A pair tensor is B×(C+Kc)×H×W: C image channels, then Kc mask channels (pairgen.encoding), all in [-1, 1]. The
same transform is applied to real pairs, fake pairs and everything else the critic sees, so the critic cannot tell
them apart by the augmentation, and it stays differentiable so the generator's gradient flows through it.

Policy: a comma list of operations (DiffAugment's names), applied in this order, each with fresh random
parameters per sample drawn from the caller's torch.Generator:
  color        brightness (+U(-0.5, 0.5)), saturation (×U(0, 2) around the per-pixel channel mean), contrast
               (×U(0.5, 1.5) around the per-sample mean) — IMAGE channels only; the mask channels are labels
  translation  integer shift by up to 1/8 of each side, zero padding — image AND mask by the same offsets
  cutout       a zeroed square of half each side at a random centre — image AND mask, the same square
So a mask never leaves its image: both move (or are cut) together, pixel for pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OPERATIONS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' → ('color', 'translation', 'cutout'); '' → () (off). ValueError when unknown."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [op for op in ops if op not in OPERATIONS]
    if unknown or len(set(ops)) != len(ops):
        raise ValueError(f"diffaug policy {policy!r}: use a comma list of distinct {', '.join(OPERATIONS)}")
    return ops


def _uniform(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """U(0, 1), shape n×1×1×1, drawn on the generator's device and moved to `like`'s device and dtype."""
    return torch.rand(n, 1, 1, 1, generator=generator, device=generator.device).to(like.device, like.dtype)


def _integers(low: int, high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator, device=generator.device).to(device)


def color(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness, saturation, contrast of images B×C×H×W (DiffAugment's rand_brightness/saturation/contrast)."""
    n = image.shape[0]
    image = image + (_uniform(n, generator, image) - 0.5)
    mean = image.mean(dim=1, keepdim=True)
    image = (image - mean) * (_uniform(n, generator, image) * 2.0) + mean
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    return (image - mean) * (_uniform(n, generator, image) + 0.5) + mean


def translation(pair: torch.Tensor, generator: torch.Generator, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift every channel of each sample by the same integer (dy, dx), |dy| <= ratio·H, |dx| <= ratio·W; the
    pixels shifted in are 0. out[b, :, y, x] = pair[b, :, y - dy, x - dx]."""
    n, channels, height, width = pair.shape
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = _integers(-sy, sy + 1, n, generator, pair.device)
    dx = _integers(-sx, sx + 1, n, generator, pair.device)
    padded = F.pad(pair, [sx, sx, sy, sy])
    rows = (torch.arange(height, device=pair.device)[None, :] - dy[:, None] + sy)          # n×H into padded rows
    cols = (torch.arange(width, device=pair.device)[None, :] - dx[:, None] + sx)           # n×W into padded cols
    picked = padded.gather(2, rows[:, None, :, None].expand(n, channels, height, padded.shape[3]))
    return picked.gather(3, cols[:, None, None, :].expand(n, channels, height, width))


def cutout(pair: torch.Tensor, generator: torch.Generator, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one (ratio·H)×(ratio·W) rectangle per sample, the same one in every channel (clipped at the border)."""
    n, _, height, width = pair.shape
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = _integers(0, height + (1 - ch % 2), n, generator, pair.device)
    cx = _integers(0, width + (1 - cw % 2), n, generator, pair.device)
    rows = torch.arange(height, device=pair.device)[None, :] - (cy[:, None] - ch // 2)
    cols = torch.arange(width, device=pair.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]   # n×H×W
    return pair * (~inside)[:, None].to(pair.dtype)


def augment_pairs(pair: torch.Tensor, image_channels: int, policy: str | tuple[str, ...],
                  generator: torch.Generator) -> torch.Tensor:
    """Augment pairs B×(C+Kc)×H×W (C = image_channels) by `policy`; returns a new tensor (same shape, device,
    dtype), differentiable w.r.t. `pair`. Randomness comes from `generator` only (on its own device)."""
    ops = parse_policy(policy) if isinstance(policy, str) else policy
    for op in ops:
        if op == "color":
            pair = torch.cat([color(pair[:, :image_channels], generator), pair[:, image_channels:]], dim=1)
        elif op == "translation":
            pair = translation(pair, generator)
        else:
            pair = cutout(pair, generator)
    return pair
