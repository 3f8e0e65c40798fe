"""Deterministic latents and the tanh-output → shard-array conversion used by `pairgen export`.

Latent scheme ("pcg64-seedseq-chunk256", stored in every synthetic shard as attribute `z_scheme`):
indices are grouped in fixed chunks of Z_CHUNK = 256; chunk c = i // 256 draws

    numpy.random.default_rng([seed, c]).standard_normal((256, z_dim), dtype=float32)

and z_i is row i % 256 of it. So z_i depends only on (seed, i, z_dim): not on block size, shard size, world size
or resume, and any index range can be produced without generating the indices before it. numpy (not torch) so the
stream is the same on every device; the latents are also stored in the shards (`latents`) for exact replay.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from pairgen.encoding import pair_to_arrays
from pairgen.core.errors import UserError
from pairgen.presets import GANConfig

Z_CHUNK = 256
Z_SCHEME = "pcg64-seedseq-chunk256"


def latents(seed: int, start: int, stop: int, z_dim: int) -> np.ndarray:
    """z for global sample indices [start, stop): float32 (stop-start)×z_dim, standard normal."""
    if seed < 0:
        raise UserError(f"--seed must be non-negative, not {seed}")
    out = np.empty((max(0, stop - start), z_dim), np.float32)
    pos = start
    while pos < stop:
        chunk = pos // Z_CHUNK
        block = np.random.default_rng([seed, chunk]).standard_normal((Z_CHUNK, z_dim), dtype=np.float32)
        take = min(stop, (chunk + 1) * Z_CHUNK) - pos
        out[pos - start:pos - start + take] = block[pos - chunk * Z_CHUNK:pos - chunk * Z_CHUNK + take]
        pos += take
    return out


@contextmanager
def fixed_cudnn_kernels() -> Iterator[None]:
    """cuDNN benchmark off, deterministic on (restored after): the same kernels every run, so sample i does not
    change in its last bits between an export and its resume. No effect on CPU."""
    cudnn = torch.backends.cudnn
    previous = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = previous


@torch.no_grad()
def generate_block(generator: torch.nn.Module, z: np.ndarray, config: GANConfig,
                   device: torch.device) -> dict[str, np.ndarray]:
    """One generator forward (eval mode, fp32, no autocast) → shard arrays for the latents z (float32 B×Z).

    Returns images uint8 B×H×W×C (round((x+1)·127.5) clipped to [0,255]), masks uint8 B×H×W (decode_mask class
    ids), masks_raw float16 B×H×W×K (raw tanh mask channels, channel-last), latents = z.
    """
    out = generator(torch.from_numpy(z).to(device))
    expected = (len(z), config.image_channels + config.mask_channels, config.height, config.width)
    if tuple(out.shape) != expected:
        raise RuntimeError(f"generator returned shape {tuple(out.shape)}, expected {expected}")
    images, raw, masks = pair_to_arrays(out, config.image_channels, config.n_classes, config.mask_encoding,
                                        raw_dtype=torch.float16)
    return {"images": images, "masks": masks, "masks_raw": raw, "latents": z}
