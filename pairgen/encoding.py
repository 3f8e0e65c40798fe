"""How a segmentation mask becomes generator/critic channels, and back.

The generator ends in tanh, so every mask channel lives in [-1, 1]:

* 'scalar' (thesis, section 4.1): ONE channel; class k sits at level -1 + 2k/(n_classes-1). For a binary mask
  that is background -1, foreground +1, and decoding thresholds at 0 exactly as the thesis does (fig. 5.2).
* 'onehot': one channel per class, +1 for the pixel's class and -1 elsewhere; decoding takes the argmax.
  Needed for many-class data (Cityscapes' 8 classes), where a single scalar channel would make neighbouring
  class ids look "close" to the critic.

Unless a run asks for one, it gets `default_encoding` of its class names: one-hot with more than one foreground
class (measured on CamVid, docs/DECISIONS.md), scalar for a binary mask (the thesis'; two one-hot channels
would carry the same information).
"""

from __future__ import annotations

import numpy as np
import torch

ENCODINGS = ("scalar", "onehot")


def default_encoding(n_classes: int) -> str:
    """The encoding a run with `n_classes` classes (background included) gets unless it asks for one."""
    return "onehot" if n_classes > 2 else "scalar"


def _check(n_classes: int, encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"mask encoding must be one of {ENCODINGS}, not {encoding!r}")
    if n_classes < 2:
        raise ValueError(f"a mask needs at least 2 classes (background + one), got {n_classes}")


def mask_channels(n_classes: int, encoding: str) -> int:
    """Number of generator output channels that carry the mask."""
    _check(n_classes, encoding)
    return 1 if encoding == "scalar" else n_classes


def encode_mask(mask: torch.Tensor, n_classes: int, encoding: str) -> torch.Tensor:
    """Class ids B×H×W (any integer dtype, values in [0, n_classes)) → float32 B×Kc×H×W in [-1, 1]."""
    _check(n_classes, encoding)
    mask = mask.long()
    if encoding == "scalar":
        return (mask.float() * (2.0 / (n_classes - 1)) - 1.0).unsqueeze(1)
    onehot = torch.nn.functional.one_hot(mask, n_classes)          # B×H×W×K in {0, 1}
    return onehot.permute(0, 3, 1, 2).float() * 2.0 - 1.0


def decode_mask(raw: torch.Tensor, n_classes: int, encoding: str) -> torch.Tensor:
    """Raw mask channels B×Kc×H×W (any float, typically tanh output) → class ids int64 B×H×W.

    scalar: nearest class level (binary: > 0 is foreground; exactly 0 rounds half-to-even to background);
    onehot: argmax over channels.
    """
    _check(n_classes, encoding)
    if raw.shape[1] != mask_channels(n_classes, encoding):
        raise ValueError(f"{encoding} masks of {n_classes} classes have {mask_channels(n_classes, encoding)} "
                         f"channels, got {raw.shape[1]}")
    if encoding == "scalar":
        level = (raw[:, 0].float() + 1.0) * ((n_classes - 1) / 2.0)
        return level.round().clamp(0, n_classes - 1).long()
    return raw.float().argmax(dim=1)


def pair_to_arrays(pair: torch.Tensor, image_channels: int, n_classes: int, encoding: str,
                   raw_dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generator output B×(C+Kc)×H×W in [-1, 1] → numpy arrays in the shard schema's layout.

    Returns (images uint8 B×H×W×C, masks_raw B×H×W×Kc in `raw_dtype`, masks uint8 B×H×W class ids). The
    masks are decoded from the float32 values; `raw_dtype` only sets what is copied back (float16 for shards:
    cast on the device, half the bytes to transfer, the same round-to-nearest-even bits as numpy's cast).
    """
    pair = pair.detach().float()
    images = ((pair[:, :image_channels] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    raw = pair[:, image_channels:]
    masks = decode_mask(raw, n_classes, encoding).to(torch.uint8)
    return (images.permute(0, 2, 3, 1).cpu().numpy(), raw.to(raw_dtype).permute(0, 2, 3, 1).cpu().numpy(),
            masks.cpu().numpy())
