"""From low-resolution network output to a label map at evaluation resolution (thesis section 4.2).

    logits (1×C×h×w) --bicubic--> (1×C×H×W) --threshold/argmax--> uint8 H×W --largest component (single object)

Choices:
* Bicubic interpolation runs on the logits, not on probabilities. The decision (logit > 0, or argmax) is then
  taken on a smooth interpolant of the scores the network actually ranks; probabilities saturate at 0/1 so
  their interpolant is nearly a step between low-res pixels, and bicubic overshoot would leave [0, 1]. On
  logits the overshoot is harmless (they are unbounded). At the low-res pixel centres both choices give the
  network's own decision; they differ only in where the boundary falls between them.
* `align_corners=False`: pixels are areas; each low-res pixel centre maps to the centre of the block of
  full-res pixels it covers (the convention of PIL / OpenCV resizing).
* Largest component uses 8-connectivity (full connectivity in N-D): a lung outline that touches itself only
  diagonally is one object, and 4-connectivity would split thin diagonal structures that the low-res network
  draws as staircase lines.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 8-connected component of a boolean mask (bool, same shape; empty stays empty).

    Ties go to the component met first in raster order, so the result is deterministic.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0                                   # background is not a component
    return labels == int(np.argmax(sizes))         # argmax returns the first (lowest label) on ties


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling of float logits B×C×h×w → float32 B×C×H×W with (H, W) = size (align_corners=False).

    Computed in float32 (bicubic is not implemented for every low-precision dtype/device pair, and bf16 would
    blur the zero crossing). An output already at `size` is returned unchanged (as float32).
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be B×C×h×w, got shape {tuple(logits.shape)}")
    logits = logits.detach().float()
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bicubic", align_corners=False)


def to_labels(logits: torch.Tensor) -> np.ndarray:
    """Logits B×C×H×W → uint8 class ids B×H×W: C == 1 → (logit > 0) i.e. sigmoid > 0.5; C > 1 → argmax."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be B×C×H×W, got shape {tuple(logits.shape)}")
    if logits.shape[1] > 255:
        raise ValueError(f"{logits.shape[1]} channels do not fit uint8 class ids")
    logits = logits.detach()
    labels = (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(dim=1)
    return labels.to(torch.uint8).cpu().numpy()


def predict_full(logits_lowres: torch.Tensor, full_shape: tuple[int, int], single_object: bool) -> np.ndarray:
    """One image's network output 1×C×h×w → uint8 H×W label map at `full_shape` = (H, W).

    upsample (bicubic, on logits) → labels → if `single_object`, keep only the largest connected component of
    the foreground (all non-zero labels together; for a binary task that is the object), the rest set to 0.
    """
    if logits_lowres.ndim != 4 or logits_lowres.shape[0] != 1:
        raise ValueError(f"expected logits of shape 1×C×h×w, got {tuple(logits_lowres.shape)}")
    with torch.no_grad():
        labels = to_labels(upsample_logits(logits_lowres, full_shape))[0]
    if single_object:
        labels = np.where(largest_component(labels > 0), labels, 0).astype(np.uint8)
    return labels
