"""Minibatches of exactly K real + M synthetic pairs (the thesis' "8-0", "4-4", "0-8" networks).

Sources hand out pairs as model tensors: images float32 n×C×H×W in [-1, 1] (v/127.5 - 1), masks int64 n×H×W
class ids, on the training device.

* `RealSource` / `ShardSynthSource` hold a whole shard directory in memory — on the training device when it fits
  (no host→device copy per batch), pinned host memory otherwise — and draw by walking a seeded permutation per
  epoch, so every sample is seen exactly once per epoch and the hot loop does no I/O.
* `GeneratorSynthSource` draws M fresh pairs per batch from a trained generator (z ~ N(0, I), masks decoded
  and thresholded with pairgen.encoding.decode_mask) — the thesis' own setup (section 4.2), an unbounded stream.

All randomness comes from the torch.Generator (CPU) that `MixedBatches` owns; its state and the sources' epoch
positions are part of `state_dict()`, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairgen.core.errors import UserError
from pairgen.shards import ShardSet

# keep a dataset on the GPU only while it takes less than this share of the free memory
DEVICE_MEMORY_SHARE = 0.25


def uint8_to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) → float32 in [-1, 1], the range the thesis normalises to (section 4.2)."""
    return images.float() / 127.5 - 1.0


def _fits_on(device: torch.device, n_bytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes < DEVICE_MEMORY_SHARE * free


class ArraySource:
    """All pairs of a shard directory, sampled without replacement per epoch (seeded permutations)."""

    kind = ""

    def __init__(self, shardset: ShardSet, device: torch.device | str) -> None:
        if self.kind and shardset.attrs.get("kind") != self.kind:
            raise UserError(f"{shardset.directory}: holds kind={shardset.attrs.get('kind')!r} shards, "
                            f"expected {self.kind!r}")
        if len(shardset) == 0:
            raise UserError(f"{shardset.directory}: holds no samples")
        self.device = torch.device(device)
        self.class_names = shardset.class_names
        images = torch.from_numpy(shardset.images).permute(0, 3, 1, 2).contiguous()  # uint8 N×C×H×W
        masks = torch.from_numpy(shardset.masks).contiguous()                         # uint8 N×H×W
        storage = self.device if _fits_on(self.device, images.nbytes + masks.nbytes) else torch.device("cpu")
        if storage.type == "cpu" and self.device.type == "cuda":
            images, masks = images.pin_memory(), masks.pin_memory()
        self.images, self.masks = images.to(storage), masks.to(storage)
        self._perm = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[3]

    def _next_indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        parts = []
        while n > 0:
            if self._pos >= len(self._perm):   # epoch boundary: a fresh permutation
                self._perm, self._pos = torch.randperm(len(self), generator=generator), 0
            chunk = self._perm[self._pos:self._pos + n]
            self._pos += len(chunk)
            n -= len(chunk)
            parts.append(chunk)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def take(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The next n pairs: (images float32 n×C×H×W in [-1, 1], masks int64 n×H×W) on the training device."""
        index = self._next_indices(n, generator).to(self.images.device)
        images = self.images.index_select(0, index).to(self.device, non_blocking=True)
        masks = self.masks.index_select(0, index).to(self.device, non_blocking=True)
        return uint8_to_model(images), masks.long()

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._perm, self._pos = state["perm"].to(torch.int64).cpu(), int(state["pos"])


class RealSource(ArraySource):
    """Real training pairs (kind='real' shards)."""

    kind = "real"


class ShardSynthSource(ArraySource):
    """Exported synthetic pairs (kind='synthetic' shards; trained on the thresholded `masks`)."""

    kind = "synthetic"


def parse_synth_filter(spec: str) -> tuple[str, float] | None:
    """--synth-filter spec → ('q', threshold) | ('top', percent) | None (''; keep every pair).

    'q>=0.8'  keep pairs whose per-pair quality (the shards' `quality`, pairgen.shards) is >= 0.8
    'top=75%' keep the best 75 % of pairs: quality >= the value at rank ceil(0.75·N) (ties at it kept too)
    """
    spec = spec.strip().replace(" ", "")
    if not spec:
        return None
    try:
        if spec.startswith("q>="):
            return "q", float(spec[3:])
        if spec.startswith("top=") and spec.endswith("%") and 0 < float(spec[4:-1]) <= 100:
            return "top", float(spec[4:-1])
    except ValueError:
        pass
    raise UserError(f"--synth-filter {spec!r}: use q>=THRESHOLD (e.g. q>=0.8) or top=PERCENT% (e.g. top=75%)")


def synth_filter_keep(quality: np.ndarray, spec: str) -> np.ndarray:
    """bool N: which pairs `spec` (parse_synth_filter) keeps, given their quality scores float N."""
    parsed = parse_synth_filter(spec)
    quality = np.asarray(quality, dtype=np.float64)
    if parsed is None or len(quality) == 0:
        return np.ones(len(quality), dtype=bool)
    kind, value = parsed
    if kind == "top":
        rank = max(1, math.ceil(value / 100.0 * len(quality)))
        value = float(np.sort(quality)[::-1][rank - 1])
    return quality >= value


def filter_synthetic(shardset: ShardSet, spec: str) -> ShardSet:
    """The pairs of a synthetic ShardSet that `spec` keeps (all of them for ''); UserError when the shards carry
    no per-pair quality (score them: `segbench score EXPORT --write-quality`) or nothing is left."""
    if parse_synth_filter(spec) is None:
        return shardset
    if shardset.quality is None:
        raise UserError(f"{shardset.directory}: --synth-filter needs per-pair quality in the shards; run "
                        f"`segbench score {shardset.directory} --write-quality` first")
    keep = synth_filter_keep(shardset.quality, spec)
    if not keep.any():
        raise UserError(f"{shardset.directory}: --synth-filter {spec} keeps none of its {len(keep)} pairs")
    arrays = {f.name: getattr(shardset, f.name) for f in dataclasses.fields(shardset)
              if isinstance(getattr(shardset, f.name), np.ndarray) and len(getattr(shardset, f.name)) == len(keep)}
    return dataclasses.replace(shardset, **{name: value[keep] for name, value in arrays.items()})


class GeneratorSynthSource:
    """Fresh pairs from a trained generator each batch: z ~ N(0, I) → generator → (image, decoded mask)."""

    def __init__(self, checkpoint: Path | str, device: torch.device | str) -> None:
        from pairgen.checkpoint import load_generator

        self.device = torch.device(device)
        self.generator, self.gan_config, self.meta = load_generator(Path(checkpoint), self.device)
        self.generator.eval()
        self.class_names = list(self.meta.get("class_names") or self.gan_config.class_names)

    @property
    def channels(self) -> int:
        return int(self.gan_config.image_channels)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.gan_config.height), int(self.gan_config.width)

    @torch.no_grad()
    def take(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh pairs: (images float32 n×C×H×W in [-1, 1], masks int64 n×H×W) on the training device."""
        from pairgen.encoding import decode_mask

        if n == 0:
            height, width = self.shape
            return (torch.empty(0, self.channels, height, width, device=self.device),
                    torch.empty(0, height, width, dtype=torch.int64, device=self.device))
        # z drawn on the CPU generator: the same stream on any device, and part of the resumable state
        z = torch.randn(n, self.gan_config.z_dim, generator=generator).to(self.device)
        pair = self.generator(z).float()
        channels = self.channels
        images = pair[:, :channels].clamp(-1.0, 1.0)
        masks = decode_mask(pair[:, channels:], len(self.class_names), self.gan_config.mask_encoding)
        return images.contiguous(), masks.long()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class MixedBatches:
    """Infinite iterator of minibatches with exactly K real then M synthetic pairs.

    Yields (images float32 B×C×H×W in [-1, 1], masks int64 B×H×W, is_synthetic bool B), B = K + M.
    `real` may be None when K == 0, `synth` when M == 0.
    """

    def __init__(self, real: ArraySource | None, synth: ArraySource | GeneratorSynthSource | None,
                 real_per_batch: int, synth_per_batch: int, generator: torch.Generator | None = None) -> None:
        if real_per_batch < 0 or synth_per_batch < 0 or real_per_batch + synth_per_batch == 0:
            raise ValueError(f"need K >= 0, M >= 0, K + M >= 1; got K={real_per_batch}, M={synth_per_batch}")
        if real_per_batch and real is None:
            raise ValueError("K > 0 real pairs per batch but no real source")
        if synth_per_batch and synth is None:
            raise ValueError("M > 0 synthetic pairs per batch but no synthetic source")
        used = [s for s, count in ((real, real_per_batch), (synth, synth_per_batch)) if count and s is not None]
        if len({(s.channels, *s.shape) for s in used}) > 1:
            raise ValueError("real and synthetic sources differ in channels or resolution")
        self.real, self.synth = real, synth
        self.real_per_batch, self.synth_per_batch = real_per_batch, synth_per_batch
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = used[0].device
        self.channels = used[0].channels
        self.shape = used[0].shape

    @property
    def batch_size(self) -> int:
        return self.real_per_batch + self.synth_per_batch

    def __iter__(self) -> "MixedBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, masks = [], []
        for source, count in ((self.real, self.real_per_batch), (self.synth, self.synth_per_batch)):
            if count:
                part_images, part_masks = source.take(count, self.generator)
                images.append(part_images)
                masks.append(part_masks)
        is_synthetic = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        is_synthetic[self.real_per_batch:] = True
        return torch.cat(images), torch.cat(masks), is_synthetic

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(),
                "real": self.real.state_dict() if self.real is not None else {},
                "synth": self.synth.state_dict() if self.synth is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if self.real is not None:
            self.real.load_state_dict(state["real"])
        if self.synth is not None:
            self.synth.load_state_dict(state["synth"])
