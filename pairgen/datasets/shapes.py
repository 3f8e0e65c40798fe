"""`shapes`: a procedural dataset generated in memory, the embedded default for demos and tests (no download).

Each case is a 1-channel (gray) 128×128 image: a smooth, noisy background with one to three textured shapes —
disc (bright, grainy), square (mid-gray, striped, rotated) and triangle (checkered, rotated) — and the mask of
their class ids (later shapes occlude earlier ones). Classes differ in outline AND texture, and every shape is
brighter than the background, so a small U-Net separates them well; sizes, positions, rotations, contrast and
noise vary per case so it is not trivial either. Case i is a pure function of (seed, i): deterministic.
Gray was chosen because the thesis' main task (lungs) is gray, and it keeps the demo fast.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from pairgen.datasets.base import Case, DatasetAdapter, Sample, register
from pairgen.core.errors import UserError

CLASS_NAMES = ["background", "disc", "square", "triangle"]
DEFAULT_N = 300
DEFAULT_SIZE = 128


def _background(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Low-frequency waves plus grain, values roughly 0.1..0.45 (float32 size×size)."""
    image = np.full(rows.shape, rng.uniform(0.2, 0.3), np.float32)
    for _ in range(3):
        freq = rng.uniform(0.5, 2.5) * 2 * np.pi / size
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        image += np.float32(0.05) * np.sin(np.float32(freq) * (cols * np.float32(np.cos(angle))
                                                              + rows * np.float32(np.sin(angle))) + np.float32(phase))
    image += rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(0.03)
    return image


def _inside(kind: int, rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, radius: float,
            theta: float) -> np.ndarray:
    """Boolean H×W of one shape: 1 disc of `radius`, 2 square of half-side 0.8·radius, 3 triangle."""
    dy, dx = rows - cy, cols - cx
    if kind == 1:
        return dy * dy + dx * dx < radius * radius
    if kind == 2:
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        half = 0.8 * radius
        return (np.abs(u) < half) & (np.abs(v) < half)
    inside = np.ones(rows.shape, bool)
    for k in range(3):  # equilateral triangle: three half-planes at inradius radius/2
        phi = theta + 2 * np.pi * k / 3
        inside &= dx * np.cos(phi) + dy * np.sin(phi) < radius / 2
    return inside


def _texture(kind: int, rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, theta: float) -> np.ndarray:
    """Texture values of a class at the given pixel coordinates (1-D arrays of the shape's pixels)."""
    grain = rng.standard_normal(rows.shape, dtype=np.float32)
    if kind == 1:   # bright and grainy
        return rng.uniform(0.75, 0.9) + 0.06 * grain
    if kind == 2:   # mid-gray stripes along the square's orientation
        u = cols * np.cos(theta) + rows * np.sin(theta)
        return rng.uniform(0.55, 0.7) + 0.1 * np.sin(2 * np.pi * u / 6.0) + 0.02 * grain
    checker = ((rows // 5 + cols // 5) % 2).astype(np.float32)   # checkered
    return rng.uniform(0.5, 0.6) + 0.3 * checker + 0.02 * grain


def make_shapes_case(seed: int, index: int, size: int = DEFAULT_SIZE) -> Sample:
    """Case `index` of the dataset with `seed` → Sample (image float32 size×size×1 in [0,1], mask ids 0..3)."""
    rng = np.random.default_rng([seed, index])
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    image = _background(rng, rows, cols, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(0.1, 0.22) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        theta = rng.uniform(0, np.pi)
        # work in the shape's bounding box only (a square's corners reach 1.13·radius from its centre)
        box = (slice(max(0, int(cy - 1.2 * radius)), int(cy + 1.2 * radius) + 2),
               slice(max(0, int(cx - 1.2 * radius)), int(cx + 1.2 * radius) + 2))
        inside = _inside(kind, rows[box], cols[box], cy, cx, radius, theta)
        image[box][inside] = _texture(kind, rng, rows[box][inside], cols[box][inside], theta)
        mask[box][inside] = kind
    image = np.clip(image, 0.0, 1.0).astype(np.float32)[..., None]
    return Sample(image=image, mask=mask, spacing_mm=None)


@register
class Shapes(DatasetAdapter):
    """Procedural textured shapes; options `n` (cases, default 300), `size` (px, 128), `seed` (0)."""

    name = "shapes"
    channels = 1
    needs_root = False

    def __init__(self, root=None, n: int = DEFAULT_N, size: int = DEFAULT_SIZE, seed: int = 0, **options) -> None:
        super().__init__(root, **options)
        if n < 1 or size < 16:
            raise UserError(f"shapes: need n >= 1 and size >= 16 (got n={n}, size={size})")
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def cases(self) -> list[Case]:
        return [Case(f"shape{i:04d}", "all", partial(make_shapes_case, self.seed, i, self.size)) for i in range(self.n)]
