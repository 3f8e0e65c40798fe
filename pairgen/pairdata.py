"""The GAN's training data: the real training split in memory on the device (PairData) and its seeded,
resumable batch order (EpochSampler). Used by pairgen.train; under torchrun the sampler orders the global batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pairgen.encoding import encode_mask
from pairgen.core.errors import UserError
from pairgen.presets import GANConfig
from pairgen.shards import load_shards


class PairData:
    """The training split in memory on the device: images uint8 N×C×H×W, masks uint8 N×H×W (no per-step I/O)."""

    def __init__(self, directory: Path, config: GANConfig, device: torch.device) -> None:
        shard_set = load_shards(directory, expect={"kind": "real", "split": "train"})
        n, height, width, channels = shard_set.images.shape
        if n == 0:
            raise UserError(f"{directory}: the training split holds no pairs")
        if (height, width) != (config.height, config.width):
            raise UserError(f"{directory}: pairs are {height}×{width}, "
                            f"the config trains {config.height}×{config.width}")
        if channels != config.image_channels:
            raise UserError(f"{directory}: images have {channels} channels, the config says {config.image_channels}")
        names = tuple(shard_set.class_names)
        # a config without class names (tests, hand-made configs) takes them from the data
        self.config = config if config.class_names else dataclasses.replace(config, class_names=names)
        if names != self.config.class_names:
            raise UserError(f"{directory}: classes {list(names)} differ from the config's "
                            f"{list(self.config.class_names)}")
        if int(shard_set.masks.max(initial=0)) >= len(names):
            raise UserError(f"{directory}: mask ids exceed the {len(names)} classes of the manifest")
        self.images = torch.from_numpy(shard_set.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.masks = torch.from_numpy(shard_set.masks).to(device)
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Pairs float32 B×(C+Kc)×H×W in [-1, 1] for sample indices `index` (int64 B)."""
        index = index.to(self.images.device)
        images = self.images[index].float() / 127.5 - 1.0
        masks = encode_mask(self.masks[index], self.config.n_classes, self.config.mask_encoding)
        return torch.cat([images, masks], dim=1).contiguous(memory_format=self.memory_format)


class EpochSampler:
    """Batches of indices from one seeded permutation per epoch; (epoch, position) resumes the order exactly."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.position = 0, 0
        self._permutation: torch.Tensor | None = None

    def _current(self) -> torch.Tensor:
        if self._permutation is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._permutation = torch.randperm(self.n, generator=generator)
        return self._permutation

    def next(self) -> torch.Tensor:
        """int64 batch_size indices; a batch that crosses an epoch end continues in the next permutation."""
        parts, need = [], self.batch_size
        while need:
            taken = self._current()[self.position:self.position + need]
            parts.append(taken)
            need -= len(taken)
            self.position += len(taken)
            if self.position >= self.n:
                self.epoch, self.position, self._permutation = self.epoch + 1, 0, None
        return torch.cat(parts)

    def state(self) -> dict[str, int]:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load(self, state: dict[str, Any], source: Path) -> None:
        if int(state["n"]) != self.n or int(state["seed"]) != self.seed:
            raise UserError(f"{source}: trained on {state['n']} pairs (seed {state['seed']}), the training split "
                            f"now has {self.n} (seed {self.seed}); resume needs the same data")
        self.epoch, self.position, self._permutation = int(state["epoch"]), int(state["position"]), None
