"""The U-Net of tables 4.2 (SCR lung: depth 3, 64 filters) and 4.4 (Cityscapes: depth 4, 256 filters).

Structure (every convolution 3×3, stride 1, padding 1, He-initialised; a constant number of filters everywhere, as
the tables list — unlike the original U-Net, channels do not double with depth):

    encoder stage i (i = 1…depth):  conv-ReLU, conv-ReLU  → kept as skip i,  then 2×2 pooling (average by default)
    encoded features:               conv-ReLU, conv-ReLU
    decoder stage j (j = 1…depth):  ×2 nearest-neighbour upsampling, concat skip (depth+1-j), conv-ReLU, conv-ReLU
    output:                         conv 3×3 → n_outputs logits, NO activation

Decisions:
* "Upsampling" in the tables is a fixed (parameter-free) upsampling, not a learned transposed convolution: we use
  nearest-neighbour ×2; the two convolutions after the concat do the learning.
* The tables list ReLU on the output layer too. Applied to logits that would be a bug: a ReLU'd logit can never be
  negative, so a sigmoid output could never drop below 0.5 (binary) and gradients die for every pixel the net
  wants to call background. The output convolution therefore produces raw logits.
* Table 4.2 lists 2 output channels although section 4.2.1 says sigmoid cross-entropy: with one foreground class we
  emit ONE logit (sigmoid/BCE, mathematically the same as a 2-way softmax); with more classes one logit per class
  (softmax cross-entropy, section 2.6.3).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.presets import SegConfig

POOLINGS = ("avg", "max")


def n_outputs_for(n_classes: int) -> int:
    """Logit channels for a task with `n_classes` classes (background included): 1 (sigmoid) for one foreground
    class, else one per class (softmax)."""
    if n_classes < 2:
        raise ValueError(f"a segmentation task needs at least 2 classes, got {n_classes}")
    return 1 if n_classes == 2 else n_classes


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with a constant filter count. forward: float B×in_channels×H×W (images in [-1, 1]) → float
    B×n_outputs×H×W logits (unbounded). H and W must be multiples of 2**depth."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, filters: int, pooling: str = "avg") -> None:
        super().__init__()
        if depth < 1 or filters < 1 or in_channels < 1 or n_outputs < 1:
            raise ValueError(f"bad U-Net shape: depth={depth} filters={filters} in={in_channels} out={n_outputs}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.depth = depth
        self.encoders = nn.ModuleList(
            _double_conv(in_channels if i == 0 else filters, filters) for i in range(depth))
        self.pool = nn.AvgPool2d(2) if pooling == "avg" else nn.MaxPool2d(2)
        self.bottleneck = _double_conv(filters, filters)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # each decoder stage sees the upsampled features concatenated with the skip: 2·filters channels
        self.decoders = nn.ModuleList(_double_conv(2 * filters, filters) for _ in range(depth))
        self.head = nn.Conv2d(filters, n_outputs, 3, padding=1)
        self._init_he()

    def _init_he(self) -> None:
        # He (Kaiming) normal for ReLU networks, fan-in as TF's he_normal; zero biases
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        multiple = 1 << self.depth
        if images.shape[-2] % multiple or images.shape[-1] % multiple:
            raise ValueError(f"U-Net of depth {self.depth} needs H and W divisible by {multiple}, "
                             f"got {tuple(images.shape[-2:])}")
        skips = []
        x = images
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(torch.cat([self.upsample(x), skip], dim=1))
        return self.head(x)


def build_unet(config: SegConfig, in_channels: int, n_classes: int) -> UNet:
    """The U-Net a SegConfig describes for images with `in_channels` channels and `n_classes` classes."""
    return UNet(in_channels, n_outputs_for(n_classes), config.depth, config.filters, config.pooling)
