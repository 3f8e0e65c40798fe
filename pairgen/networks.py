"""The DCGAN-style pair generator and critic of the thesis (tables 4.1 and 4.3), sized by a GANConfig.

Generator: z (B×z_dim, N(0, I)) → FC → g_channels[0] × (H>>S) × (W>>S), BN + ReLU, then S = len(g_channels)
stages of 5×5 stride-2 transposed convolutions that each exactly double the resolution; stage i maps
g_channels[i] → g_channels[i+1] with BN + ReLU, the last stage maps to image+mask channels with tanh and no BN.
Output: float B×(C+Kc)×H×W in [-1, 1], image channels first, then the mask channels (pairgen.encoding).

The tables list "padding 1" for the transposed convolutions: that is TensorFlow's SAME padding of
conv2d_transpose (output = 2 × input). In PyTorch a 5×5 stride-2 transposed conv doubles the size exactly with
padding=2, output_padding=1: out = (in-1)·2 - 2·2 + 5 + 1 = 2·in.

Critic: len(d_channels) 5×5 stride-2 convolutions (padding 2, so each halves the size) with normalisation
config.critic_norm and activation config.critic_activation, then FC → one score per sample (B×1, unbounded).

Why the critic defaults to *layer* norm although the tables say batch norm: the gradient penalty of WGAN-GP
penalises ||∇_x D(x)|| for each sample x on its own. Batch norm makes D(x_i) depend on every other sample of
the batch, so the penalised gradient is no longer the gradient of a per-sample function and the penalty's
derivation (unit-norm gradients of the optimal critic) does not hold; Gulrajani et al. (2017) therefore drop
batch norm from the critic and recommend layer norm. 'layer' here is GroupNorm(1, C): per sample over C×H×W
with a per-channel affine, the layer norm of the WGAN-GP reference code. 'batch' reproduces the tables.

All conv/linear weights use He (Kaiming normal) initialisation as the tables state; biases start at zero.
"""

from __future__ import annotations

import torch
from torch import nn

from pairgen.encoding import mask_channels
from pairgen.presets import GANConfig

LRELU_SLOPE = 0.2


def _he_init(module: nn.Module, nonlinearity: str, slope: float = 0.0) -> None:
    """He-normal weights for every conv/linear layer (the tables: "all weights … He initializer"), zero biases.

    As with TF's He initializer, every layer (including the tanh output and the critic's FC) gets the ReLU gain,
    and a transposed conv's fan-in is taken from its weight's second axis (out_channels·k²), which is what TF's
    variance scaling computes for conv2d_transpose filters too.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity=nonlinearity)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def pair_channels(config: GANConfig) -> int:
    """Channels of an image+mask pair tensor: image channels, then mask channels."""
    return config.image_channels + mask_channels(config.n_classes, config.mask_encoding)


class Generator(nn.Module):
    """z float32 B×z_dim → pair float B×(C+Kc)×H×W in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        stages = len(config.g_channels)
        self.start = (config.height >> stages, config.width >> stages)
        self.start_channels = config.g_channels[0]
        k = config.kernel_size
        # BN follows the projection, so its bias would be redundant
        self.project = nn.Linear(config.z_dim, self.start_channels * self.start[0] * self.start[1], bias=False)
        # per-channel BN on the reshaped projection (DCGAN style); the table only says "batch normalization: yes"
        self.project_norm = nn.BatchNorm2d(self.start_channels)
        outputs = list(config.g_channels[1:]) + [pair_channels(config)]
        layers: list[nn.Module] = []
        for index, (c_in, c_out) in enumerate(zip(config.g_channels, outputs)):
            last = index == stages - 1
            # TF 'SAME' for a stride-2 transposed conv: exactly doubles H and W (see module docstring)
            layers.append(nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2,
                                             output_padding=1, bias=last))
            layers.extend([nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)])
        self.stages = nn.Sequential(*layers)
        _he_init(self, "relu")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.start_channels, *self.start)
        x = torch.relu(self.project_norm(x))
        return self.stages(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"critic_norm must be 'layer', 'batch' or 'none', not {kind!r}")


class Critic(nn.Module):
    """pair float B×(C+Kc)×H×W → scores float B×1 (unbounded; higher = judged more real)."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        if config.critic_activation not in ("relu", "lrelu"):
            raise ValueError(f"critic_activation must be 'relu' or 'lrelu', not {config.critic_activation!r}")
        k = config.kernel_size
        layers: list[nn.Module] = []
        c_in, height, width = pair_channels(config), config.height, config.width
        for c_out in config.d_channels:
            layers.append(nn.Conv2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2,
                                    bias=config.critic_norm == "none"))
            layers.append(_norm(config.critic_norm, c_out))
            layers.append(nn.LeakyReLU(LRELU_SLOPE, inplace=True) if config.critic_activation == "lrelu"
                          else nn.ReLU(inplace=True))
            c_in = c_out
            # conv output size with padding (k-1)/2, stride 2: ceil(size / 2)
            height, width = (height + 1) // 2, (width + 1) // 2
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(c_in * height * width, 1)
        if config.critic_activation == "lrelu":
            _he_init(self, "leaky_relu", LRELU_SLOPE)
        else:
            _he_init(self, "relu")

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(pair).flatten(1))


def build_generator(config: GANConfig) -> Generator:
    """Generator for `config` (train mode, fp32, on the current default device)."""
    return Generator(config)


def build_critic(config: GANConfig) -> Critic:
    """Critic for `config` (train mode, fp32, on the current default device)."""
    return Critic(config)
