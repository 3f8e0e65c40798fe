"""Sample sheets like thesis figures 5.2/5.3: per sample the image, the raw mask and the thresholded mask.

Each sample is a tile of three panels side by side:
  1. the image (gray or RGB),
  2. the raw mask output: scalar encoding as gray ([-1, 1] → black…white); one-hot as a colour blend of the
     class colours weighted by each channel's (raw+1)/2, so uncertainty shows as mixed colours (no argmax);
     for real data (no raw mask) the class-colour map of the mask,
  3. the thresholded/decoded mask overlaid in colour on the image (background left as the image).
Thumbnails are upscaled (nearest neighbour, whole pixels) to at least MIN_THUMB px on their short side, and a
legend row names the class colours (pairgen.core.colors: the same colours as every other figure of the dataset)
and the three panels. Written atomically (PNG in memory → temp file → rename).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pairgen.encoding import pair_to_arrays
from pairgen.presets import GANConfig
from pairgen.core.colors import class_colors
from pairgen.core.files import atomic_write_bytes

GAP = 4          # pixels between panels
TILE_GAP = 12    # pixels between samples
OVERLAY_ALPHA = 0.5
MIN_THUMB = 128  # thumbnails are upscaled to at least this many pixels on their short side
LEGEND_FONT = 16


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×C (C = 1 or 3) → float32 H×W×3."""
    image = image.astype(np.float32)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]


def _raw_panel(raw: np.ndarray | None, mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    if raw is None:
        return colours[mask]
    raw = raw.astype(np.float32)
    if raw.shape[2] == 1:
        return np.repeat((np.clip(raw, -1, 1) + 1.0) * 127.5, 3, axis=2)
    weights = (np.clip(raw, -1, 1) + 1.0) / 2.0                          # H×W×K in [0, 1]
    total = weights.sum(axis=2, keepdims=True)
    return np.where(total > 1e-6, weights @ colours[: raw.shape[2]] / np.maximum(total, 1e-6), 0.0)


def _overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    rgb = _rgb(image)
    blended = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours[mask]
    return np.where(mask[..., None] > 0, blended, rgb)


def _legend(class_names: Sequence[str], colours: np.ndarray, width: int) -> np.ndarray:
    """A white row: a swatch and the name of every class, then what the three panels of a tile show."""
    font = ImageFont.load_default(size=LEGEND_FONT)
    height, box = LEGEND_FONT + 12, LEGEND_FONT
    canvas = Image.new("RGB", (max(width, 1), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 4
    for name, colour in zip(class_names, colours):
        draw.rectangle([x, 6, x + box, 6 + box], fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + box + 4, 5), str(name), fill=(0, 0, 0), font=font)
        x += box + 4 + int(draw.textlength(str(name), font=font)) + 16
    draw.text((x + 16, 5), "each tile: image | raw mask | mask over image", fill=(90, 90, 90), font=font)
    return np.asarray(canvas, np.float32)


def _upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the first two axes by a whole factor (pixels stay sharp squares)."""
    return array if factor == 1 else np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def pair_sheet(images: np.ndarray, masks_raw: np.ndarray | None, masks: np.ndarray, class_names: Sequence[str],
               path: Path, columns: int = 8) -> Path:
    """Write a PNG sheet of image / raw mask / overlay triplets, `columns` samples per row; returns `path`.

    images uint8 N×H×W×C (C 1 or 3), masks_raw float N×H×W×K in [-1, 1] or None (real data), masks uint8 N×H×W.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or masks.shape != images.shape[:3]:
        raise ValueError(f"images must be N×H×W×C and masks N×H×W, got {images.shape} and {masks.shape}")
    n, height, width = masks.shape
    factor = max(1, math.ceil(MIN_THUMB / min(height, width)))
    n_classes = max(len(class_names), int(masks.max(initial=0)) + 1)
    names = list(class_names) + [f"class {i}" for i in range(len(class_names), n_classes)]
    colours = class_colors(names)
    height, width = height * factor, width * factor
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    tile_w = 3 * width + 2 * GAP
    sheet_w = columns * tile_w + (columns - 1) * TILE_GAP
    sheet = np.full((rows * height + (rows - 1) * TILE_GAP, sheet_w, 3), 255.0, np.float32)
    for i in range(n):
        top = (i // columns) * (height + TILE_GAP)
        left = (i % columns) * (tile_w + TILE_GAP)
        raw = None if masks_raw is None else _upscale(np.asarray(masks_raw[i]), factor)
        image, mask = _upscale(images[i], factor), _upscale(masks[i], factor)
        panels = (_rgb(image), _raw_panel(raw, mask, colours), _overlay(image, mask, colours))
        for j, panel in enumerate(panels):
            x = left + j * (width + GAP)
            sheet[top:top + height, x:x + width] = panel
    sheet = np.concatenate([sheet, _legend(names, colours, sheet_w)], axis=0)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(sheet, 0, 255).round().astype(np.uint8)).save(buffer, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


@torch.no_grad()
def sample_sheet(generator: torch.nn.Module, config: GANConfig, n: int = 16, seed: int = 0,
                 path: Path = Path("samples.png"), device: str | torch.device | None = None,
                 columns: int | None = None) -> Path:
    """Sample n pairs with z from a private RNG seeded `seed` and write their pair_sheet to `path`.

    Runs the generator in eval mode (BN running statistics, as export does) and restores its previous mode, and
    touches no global RNG, so sampling during training changes neither the weights nor the training stream.
    """
    if device is None:
        device = next(generator.parameters()).device
    z = torch.randn(n, config.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = generator.training
    generator.eval()
    try:
        pair = generator(z)
    finally:
        generator.train(was_training)
    images, raw, masks = pair_to_arrays(pair, config.image_channels, config.n_classes, config.mask_encoding)
    if columns is None:
        columns = 2 if config.width > config.height else 4
    return pair_sheet(images, raw, masks, config.class_names, path, columns=columns)
