"""Pair-consistent differentiable augmentation of critic inputs (DiffAugment, Zhao et al. 2020), for pairs.

A pair tensor is B×(C+Kc)×H×W: C image channels, then Kc mask channels (pairgen.encoding), all in [-1, 1]. The
same transform is applied to real pairs, fake pairs and everything else the critic sees, so the critic cannot tell
them apart by the augmentation, and it stays differentiable so the generator's gradient flows through it.

Policy: a comma list of operations (DiffAugment's names), applied in this order, each with fresh random
parameters per sample. The randomness comes in as uniforms u ~ U[0, 1), B×n_uniforms(policy), drawn by the caller
(`draw`): the training step draws them with z and ε from the global RNG before each iteration, so the eager and the
CUDA-graph iteration see the same numbers and a checkpoint's RNG state resumes them exactly.
  color        brightness (+U(-0.5, 0.5)), saturation (×U(0, 2) around the per-pixel channel mean), contrast
               (×U(0.5, 1.5) around the per-sample mean) — IMAGE channels only; the mask channels are labels
  translation  integer shift by up to 1/8 of each side, zero padding — image AND mask by the same offsets
  cutout       a zeroed square of half each side at a random centre — image AND mask, the same square
So a mask never leaves its image: both move (or are cut) together, pixel for pixel. (On a 1-channel image the
saturation step is the identity: the per-pixel channel mean is the pixel.)
With p < 1 (GANConfig.diffaug_p, ADA's augmentation probability) each operation reads one more uniform per sample,
its gate, and is applied only to the samples whose gate is below p.
Measured (docs/DECISIONS.md): translation collapses this WGAN-GP's samples to nearly one pair, at any shift range
tried, with zero or circular padding and whatever the penalty's interpolates; color and cutout do not.
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


# uniforms each operation consumes per sample, in this order
UNIFORMS = {"color": 3, "translation": 2, "cutout": 2}


def n_uniforms(ops: tuple[str, ...], gated: bool = False) -> int:
    """Columns of u that `augment_pairs` consumes for `ops`; `gated` (p < 1): one more per operation, its gate."""
    return sum(UNIFORMS[op] + gated for op in ops)


def draw(n: int, ops: tuple[str, ...], generator: torch.Generator | None = None,
         device: torch.device | str = "cpu", gated: bool = False) -> torch.Tensor:
    """u ~ U[0, 1), float32 n×n_uniforms(ops, gated), from `generator` (None: the global RNG of `device`)."""
    return torch.rand(n, n_uniforms(ops, gated), generator=generator, device=device)


def _column(u: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One column of u (B) as B×1×1×1 in `like`'s dtype."""
    return u.to(like.dtype).reshape(-1, 1, 1, 1)


def _integers(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Integers uniform in [low, high) from uniforms u in [0, 1) (int64, same shape)."""
    return (low + torch.floor(u * (high - low))).long().clamp_(low, high - 1)


def color(image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation, contrast of images B×C×H×W (DiffAugment's rand_brightness/saturation/contrast);
    u: B×3 uniforms."""
    image = image + (_column(u[:, 0], image) - 0.5)
    mean = image.mean(dim=1, keepdim=True)
    image = (image - mean) * (_column(u[:, 1], image) * 2.0) + mean
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    return (image - mean) * (_column(u[:, 2], image) + 0.5) + mean


def translation(pair: torch.Tensor, u: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift every channel of each sample by the same integer (dy, dx), |dy| <= ratio·H, |dx| <= ratio·W (u: B×2
    uniforms); the pixels shifted in are 0. out[b, :, y, x] = pair[b, :, y - dy, x - dx]."""
    n, channels, height, width = pair.shape
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy, dx = _integers(u[:, 0], -sy, sy + 1).to(pair.device), _integers(u[:, 1], -sx, sx + 1).to(pair.device)
    padded = F.pad(pair, [sx, sx, sy, sy])
    rows = (torch.arange(height, device=pair.device)[None, :] - dy[:, None] + sy)          # n×H into padded rows
    cols = (torch.arange(width, device=pair.device)[None, :] - dx[:, None] + sx)           # n×W into padded cols
    picked = padded.gather(2, rows[:, None, :, None].expand(n, channels, height, padded.shape[3]))
    return picked.gather(3, cols[:, None, None, :].expand(n, channels, height, width))


def cutout(pair: torch.Tensor, u: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one (ratio·H)×(ratio·W) rectangle per sample (u: B×2 uniforms for its centre), the same one in every
    channel (clipped at the border)."""
    _, _, height, width = pair.shape
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = _integers(u[:, 0], 0, height + (1 - ch % 2)).to(pair.device)
    cx = _integers(u[:, 1], 0, width + (1 - cw % 2)).to(pair.device)
    rows = torch.arange(height, device=pair.device)[None, :] - (cy[:, None] - ch // 2)
    cols = torch.arange(width, device=pair.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]   # n×H×W
    return pair * (~inside)[:, None].to(pair.dtype)


def augment_pairs(pair: torch.Tensor, image_channels: int, policy: str | tuple[str, ...],
                  u: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Augment pairs B×(C+Kc)×H×W (C = image_channels) by `policy` with uniforms u (B×n_uniforms(ops, p < 1),
    from `draw`); returns a new tensor (same shape, device, dtype), differentiable w.r.t. `pair`.

    p < 1 (ADA's augmentation probability): each operation is applied to each sample only where its gate
    column (after the operation's own columns) is below p, else the sample passes through it unchanged."""
    ops = parse_policy(policy) if isinstance(policy, str) else policy
    column, gated = 0, p < 1.0
    for op in ops:
        part, column = u[:, column:column + UNIFORMS[op]], column + UNIFORMS[op]
        if op == "color":
            out = torch.cat([color(pair[:, :image_channels], part), pair[:, image_channels:]], dim=1)
        elif op == "translation":
            out = translation(pair, part)
        else:
            out = cutout(pair, part)
        if gated:
            pair, column = torch.where((u[:, column] < p).reshape(-1, 1, 1, 1), out, pair), column + 1
        else:
            pair = out
    return pair
