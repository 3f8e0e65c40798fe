"""Minibatch mixing: exactly K real + M synthetic pairs, every real sample once per epoch, resumable draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pairgen.core.errors import UserError
from pairgen.shards import ShardSet
from segbench.mixing import MixedBatches, RealSource, ShardSynthSource, uint8_to_model


def index_shardset(n: int, kind: str, offset: int = 0, size: int = 8) -> ShardSet:
    """Sample i's image is filled with the value offset + i and its mask with i % 2, so batches reveal indices."""
    values = np.arange(n, dtype=np.uint8) + offset
    images = np.broadcast_to(values[:, None, None, None], (n, size, size, 1)).copy()
    masks = np.broadcast_to((np.arange(n) % 2).astype(np.uint8)[:, None, None], (n, size, size)).copy()
    return ShardSet(directory=Path(f"/{kind}"), attrs={"kind": kind, "class_names": ["background", "disc"]},
                    images=images, masks=masks, sample_index=np.arange(n, dtype=np.int64))


def values_of(images: torch.Tensor) -> list[int]:
    """Invert uint8_to_model on a batch of constant images: one integer per sample."""
    return ((images[:, 0, 0, 0] + 1.0) * 127.5).round().long().tolist()


def make_batches(k: int, m: int, seed: int = 0, n_real: int = 12, n_synth: int = 7) -> MixedBatches:
    real = RealSource(index_shardset(n_real, "real"), "cpu") if k else None
    synth = ShardSynthSource(index_shardset(n_synth, "synthetic", offset=100), "cpu") if m else None
    return MixedBatches(real, synth, k, m, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k, m", [(3, 2), (0, 4), (5, 0), (1, 1)])
def test_exact_composition(k: int, m: int) -> None:
    batches = make_batches(k, m)
    for _ in range(6):
        images, masks, is_synthetic = next(batches)
        assert images.shape == (k + m, 1, 8, 8) and images.dtype == torch.float32
        assert masks.shape == (k + m, 8, 8) and masks.dtype == torch.int64
        assert is_synthetic.dtype == torch.bool and is_synthetic.tolist() == [False] * k + [True] * m
        values = values_of(images)
        assert all(v < 100 for v in values[:k]) and all(v >= 100 for v in values[k:])   # real first, then synth
        assert images.min() >= -1.0 and images.max() <= 1.0
        # mask follows its image (same index)
        assert [int(masks[i, 0, 0]) for i in range(k + m)] == [(v % 100) % 2 for v in values]


def test_every_real_sample_once_per_epoch() -> None:
    n_real, k = 12, 5   # K does not divide N: epochs straddle batches
    batches = make_batches(k, 2, n_real=n_real)
    drawn = []
    for _ in range(12):   # 60 real draws = 5 epochs
        drawn += values_of(next(batches)[0])[:k]
    for epoch in range(5):
        assert sorted(drawn[epoch * n_real:(epoch + 1) * n_real]) == list(range(n_real))
    assert drawn[:n_real] != drawn[n_real:2 * n_real]   # a fresh permutation per epoch


def test_seeded_and_resumable() -> None:
    first, second = make_batches(3, 2, seed=7), make_batches(3, 2, seed=7)
    for _ in range(3):
        assert torch.equal(next(first)[0], next(second)[0])
    assert not torch.equal(next(make_batches(3, 2, seed=8))[0], next(make_batches(3, 2, seed=7))[0])
    state = first.state_dict()
    expected = [next(first)[0] for _ in range(5)]
    resumed = make_batches(3, 2, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, next(resumed)[0]) for a in expected)


def test_uint8_to_model_range() -> None:
    out = uint8_to_model(torch.tensor([0, 255], dtype=torch.uint8))
    assert out.tolist() == [-1.0, 1.0]


def test_refusals() -> None:
    with pytest.raises(UserError, match="expected 'real'"):
        RealSource(index_shardset(4, "synthetic"), "cpu")
    with pytest.raises(UserError, match="expected 'synthetic'"):
        ShardSynthSource(index_shardset(4, "real"), "cpu")
    with pytest.raises(ValueError, match="no real source"):
        MixedBatches(None, ShardSynthSource(index_shardset(4, "synthetic"), "cpu"), 2, 2)
    with pytest.raises(ValueError, match="K \\+ M >= 1"):
        MixedBatches(RealSource(index_shardset(4, "real"), "cpu"), None, 0, 0)
    small = RealSource(index_shardset(4, "real", size=8), "cpu")
    large = ShardSynthSource(index_shardset(4, "synthetic", size=16), "cpu")
    with pytest.raises(ValueError, match="resolution"):
        MixedBatches(small, large, 2, 2)
