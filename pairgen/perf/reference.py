"""Plain references for the benchmark: straightforward eager float32 PyTorch versions of the pair GAN's networks,
its WGAN-GP iteration and a per-sample HDF5 export, written for scripts/bench.py to measure pairgen against.

"Plain" means what a first implementation would do: nn.Sequential nets in NCHW, torch.optim.Adam with its
defaults, one generator forward per critic step, separate critic forwards for real, fake and interpolates, no
autocast, no finite checks, and for export one sample per forward and per HDF5 row write. The networks are the
same as pairgen.networks (layer for layer; tests/pairgen/test_bench.py loads pairgen weights into them).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from pairgen.networks import pair_channels
from pairgen.presets import GANConfig


def reference_generator(config: GANConfig) -> nn.Sequential:
    """z float32 B×z_dim → pairs float32 B×(C+Kc)×H×W in [-1, 1] (same layers as pairgen.networks.Generator)."""
    stages = len(config.g_channels)
    h, w, c0, k = config.height >> stages, config.width >> stages, config.g_channels[0], config.kernel_size
    layers: list[nn.Module] = [nn.Linear(config.z_dim, c0 * h * w, bias=False), nn.Unflatten(1, (c0, h, w)),
                               nn.BatchNorm2d(c0), nn.ReLU()]
    outputs = list(config.g_channels[1:]) + [pair_channels(config)]
    for index, (c_in, c_out) in enumerate(zip(config.g_channels, outputs)):
        last = index == stages - 1
        layers.append(nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2, output_padding=1,
                                         bias=last))
        layers.extend([nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU()])
    return nn.Sequential(*layers)


def reference_critic(config: GANConfig) -> nn.Sequential:
    """pairs float32 B×(C+Kc)×H×W → scores float32 B×1 (same layers as pairgen.networks.Critic)."""
    layers: list[nn.Module] = []
    c_in, h, w, k = pair_channels(config), config.height, config.width, config.kernel_size
    for c_out in config.d_channels:
        layers.append(nn.Conv2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2, bias=config.critic_norm == "none"))
        layers.append({"layer": nn.GroupNorm(1, c_out), "batch": nn.BatchNorm2d(c_out),
                       "none": nn.Identity()}[config.critic_norm])
        layers.append(nn.LeakyReLU(0.2) if config.critic_activation == "lrelu" else nn.ReLU())
        c_in, h, w = c_out, (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * h * w, 1))


class ReferenceGAN:
    """The plain WGAN-GP loop (Gulrajani et al. 2017, algorithm 1) on an in-memory float32 dataset."""

    def __init__(self, config: GANConfig, pairs: torch.Tensor) -> None:
        """pairs: float32 N×(C+Kc)×H×W in [-1, 1] on the training device."""
        self.config, self.pairs = config, pairs
        device = pairs.device
        self.generator = reference_generator(config).to(device)
        self.critic = reference_critic(config).to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=config.betas)

    def iteration(self) -> None:
        """critic_steps critic updates, then one generator update."""
        config, generator, critic = self.config, self.generator, self.critic
        batch, device = config.batch_size, self.pairs.device
        for _ in range(config.critic_steps):
            real = self.pairs[torch.randint(len(self.pairs), (batch,), device=device)]
            with torch.no_grad():
                fake = generator(torch.randn(batch, config.z_dim, device=device))
            eps = torch.rand(batch, 1, 1, 1, device=device)
            mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grads,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
            penalty = ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
            loss = critic(fake).mean() - critic(real).mean() + config.gp_lambda * penalty
            self.opt_d.zero_grad()
            loss.backward()
            self.opt_d.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        loss = -critic(generator(torch.randn(batch, config.z_dim, device=device))).mean()
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        for p in critic.parameters():
            p.requires_grad_(True)


@torch.no_grad()
def reference_export(generator: nn.Module, config: GANConfig, n: int, path: Path, seed: int = 0) -> None:
    """n samples, one generator forward and one HDF5 row write per sample, into one file with the shard's
    datasets (images, masks, masks_raw, latents, sample_index); masks compressed with lzf like the shards."""
    generator.eval()
    device = next(generator.parameters()).device
    channels, h, w = config.image_channels, config.height, config.width
    k = config.mask_channels
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        images = h5.create_dataset("images", (n, h, w, channels), np.uint8)
        masks = h5.create_dataset("masks", (n, h, w), np.uint8, chunks=(1, h, w), compression="lzf")
        raw = h5.create_dataset("masks_raw", (n, h, w, k), np.float16, chunks=(1, h, w, k), compression="lzf")
        latents = h5.create_dataset("latents", (n, config.z_dim), np.float32)
        index = h5.create_dataset("sample_index", (n,), np.int64)
        for i in range(n):
            z = rng.standard_normal(config.z_dim, dtype=np.float32)
            pair = generator(torch.from_numpy(z)[None].to(device))[0].float().cpu()
            image = ((pair[:channels] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            mask_raw = pair[channels:]
            if k == 1:
                mask = (mask_raw[0] > 0).to(torch.uint8)
            else:
                mask = mask_raw.argmax(0).to(torch.uint8)
            images[i] = image.permute(1, 2, 0).numpy()
            masks[i] = mask.numpy()
            raw[i] = mask_raw.permute(1, 2, 0).numpy().astype(np.float16)
            latents[i] = z
            index[i] = i
