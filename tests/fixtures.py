"""Tiny synthetic shard trees for tests that must not depend on an adapter or real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairgen import shards

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def disc_pair(rng: np.random.Generator, height: int, width: int, channels: int, n_classes: int):
    """One learnable pair: bright discs (class k at intensity ~k) on a dark noisy background.

    Returns (image uint8 H×W×C, mask uint8 H×W with ids in [0, n_classes)).
    """
    rows, cols = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    image = rng.normal(40, 10, (height, width)).astype(np.float32)
    for k in range(1, n_classes):
        r = rng.uniform(0.15, 0.25) * min(height, width)
        cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
        mask[inside] = k
        image[inside] = 80 + 160 * k / max(1, n_classes - 1) + rng.normal(0, 5, inside.sum())
    image = np.clip(image, 0, 255).astype(np.uint8)[..., None].repeat(channels, axis=2)
    return image, mask


def make_real_split(directory: Path, n: int, height: int = 32, width: int = 32, channels: int = 1,
                    class_names: tuple[str, ...] = ("background", "left lung"), split: str = "train",
                    dataset: str = "test-discs", fold: str = "fold1", seed: int = 0,
                    full_scale: int = 2, spacing_mm: float = 0.7) -> Path:
    """Write one real shard directory (n samples) with a manifest; test splits get full-resolution masks."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [disc_pair(rng, height, width, channels, len(class_names)) for _ in range(n)]
    arrays = {
        "images": np.stack([p[0] for p in pairs]),
        "masks": np.stack([p[1] for p in pairs]),
        "sample_index": np.arange(n, dtype=np.int64),
        "case_id": [f"case{i:03d}" for i in range(n)],
        "spacing_mm": np.full((n, 2), spacing_mm / full_scale, np.float32),
    }
    if split == "test":
        full = [np.kron(p[1], np.ones((full_scale, full_scale), np.uint8)) for p in pairs]
        arrays["full_masks"] = full
        arrays["full_shapes"] = np.array([m.shape for m in full], np.int32)
    attrs = {"kind": "real", "dataset": dataset, "split": split, "fold": fold, "class_names": list(class_names)}
    info = shards.write_shard(directory / shards.SHARD_PATTERN.format(0), arrays, attrs)
    shards.write_manifest(directory, attrs, [info])
    return directory


def make_real_tree(parent: Path, n_train: int = 24, n_val: int = 8, n_test: int = 8, **kwargs) -> Path:
    """parent/{train,val,test} real shard directories, as `pairgen prepare` lays them out."""
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        make_real_split(Path(parent) / split, n, split=split, seed=offset, **kwargs)
    return Path(parent)
