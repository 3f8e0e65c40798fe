"""The one class-colour map every figure uses (pairgen sample sheets, segbench's qualitative figures).

A dataset's colours are a function of its class names (index = class id): class 0 (background/void) is black,
the Cityscapes categories (Cityscapes and CamVid) get the Cityscapes colours, the SCR structures fixed colours,
and any other class a well-separated palette colour by its index. So one dataset looks the same in every figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# background black, then well-separated colours (cycled beyond their number)
PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128), (128, 128, 128),
], np.float32)

# Cityscapes' own colours of a representative label of each category (cityscapesScripts labels.py), and SCR
NAMED = {
    "flat": (128, 64, 128), "construction": (70, 70, 70), "object": (250, 170, 30), "nature": (107, 142, 35),
    "sky": (70, 130, 180), "human": (220, 20, 60), "vehicle": (0, 0, 142),
    "left lung": (230, 25, 75), "right lung": (0, 130, 200), "heart": (255, 225, 25),
    "left clavicle": (60, 180, 75), "right clavicle": (245, 130, 48),
}


def class_colors(class_names: Sequence[str] | int) -> np.ndarray:
    """float32 K×3 RGB in [0, 255] for K classes (names, or just their number); class 0 is black."""
    names = [""] * class_names if isinstance(class_names, int) else [str(n).lower() for n in class_names]
    colors = np.empty((len(names), 3), np.float32)
    for i, name in enumerate(names):
        if i == 0:
            colors[i] = 0.0
        elif name in NAMED:
            colors[i] = NAMED[name]
        else:
            colors[i] = PALETTE[1 + (i - 1) % (len(PALETTE) - 1)]
    return colors
