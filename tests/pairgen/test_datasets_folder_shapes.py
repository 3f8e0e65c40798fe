"""folder adapter (user data) and the procedural shapes dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairgen.datasets.base import REGISTRY
from pairgen.datasets.registry import get_adapter
from pairgen.core.errors import UserError
from pairgen.prepare import check_dataset

try:
    from tests.pairgen import dataset_trees as trees
except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
    import dataset_trees as trees


def test_registry_has_every_adapter() -> None:
    assert sorted(REGISTRY) == ["camvid", "cityscapes", "folder", "scr-lung", "shapes"]
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        get_adapter("mnist")


def test_folder_binary_masks_0_255_read_as_0_1(tmp_path: Path) -> None:
    root = trees.folder_tree(tmp_path / "data", 3)
    adapter = get_adapter("folder", tmp_path)
    assert adapter.class_names == ["background", "foreground"] and adapter.channels == 1
    cases = adapter.cases()
    assert [c.case_id for c in cases] == ["img00", "img01", "img02"]
    sample = cases[1].load()
    assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask)) == {0, 1}
    assert sample.image.shape == (16, 16, 1)
    np.testing.assert_allclose(sample.image[..., 0][sample.mask == 1], 220 / 255, rtol=1e-6)
    assert check_dataset("folder", str(root)) == []


def test_folder_rgb_and_multiclass(tmp_path: Path) -> None:
    trees.folder_tree(tmp_path, 2, rgb=True)
    trees.write_png(tmp_path / "masks" / "img00.png", np.array([[0, 1], [2, 2]], np.uint8).repeat(8, 0).repeat(8, 1))
    adapter = get_adapter("folder", tmp_path, classes=["bg", "a", "b"])
    assert adapter.channels == 3
    sample = adapter.cases()[0].load()
    assert sample.image.shape == (16, 16, 3) and sorted(np.unique(sample.mask)) == [0, 1, 2]
    with pytest.raises(UserError, match=r"img01.png: unexpected label values 255"):
        adapter.cases()[1].load()


def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    root = trees.folder_tree(tmp_path, 4)
    trees.write_png(root / "masks" / "img00.png", np.full((16, 16), 7, np.uint8))
    trees.write_png(root / "masks" / "img01.png", np.zeros((8, 16), np.uint8))
    (root / "images" / "img02.png").write_bytes(b"not an image at all")
    (root / "masks" / "img03.png").unlink()
    with pytest.raises(UserError, match=r"img03.png: no mask"):
        get_adapter("folder", root).cases()
    problems = check_dataset("folder", str(root))
    assert len(problems) == 4, problems
    assert any("img00.png: unexpected label values 7" in p for p in problems)
    assert any("img01.png: mask is 8x16, the image img01.png is 16x16" in p for p in problems)
    assert any("img02.png: unreadable or corrupt image" in p for p in problems)
    with pytest.raises(UserError, match="no images/ \\+ masks/ folders"):
        get_adapter("folder", root / "masks").cases()


def test_shapes_is_deterministic_and_labelled() -> None:
    adapter = get_adapter("shapes")
    assert adapter.needs_root is False and adapter.channels == 1
    assert adapter.class_names == ["background", "disc", "square", "triangle"]
    cases = adapter.cases()
    assert len(cases) == 300 and cases[0].case_id == "shape0000"
    first, again = cases[7].load(), get_adapter("shapes").cases()[7].load()
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    other = get_adapter("shapes", seed=1).cases()[7].load()
    assert not np.array_equal(first.mask, other.mask)
    samples = [c.load() for c in cases[:40]]
    masks = np.stack([s.mask for s in samples])
    assert first.image.dtype == np.float32 and first.image.shape == (128, 128, 1)
    assert 0.0 <= min(s.image.min() for s in samples) and max(s.image.max() for s in samples) <= 1.0
    fractions = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert fractions[0] > 0.6 and (fractions[1:] > 0.02).all(), fractions


def test_shapes_classes_are_separable_by_simple_local_features() -> None:
    """A cheap stand-in for "a small U-Net learns it": a nearest-centroid rule on 3 local features
    (mean, local contrast, horizontal/vertical gradient balance) trained on 30 cases recognises
    every class on held-out cases."""
    from scipy import ndimage

    def features(image: np.ndarray) -> np.ndarray:
        mean = ndimage.uniform_filter(image, 5)
        contrast = np.sqrt(np.maximum(ndimage.uniform_filter(image ** 2, 5) - mean ** 2, 0))
        gy, gx = np.abs(np.diff(image, axis=0, append=0)), np.abs(np.diff(image, axis=1, append=0))
        balance = ndimage.uniform_filter(gy - gx, 5)
        return np.stack([mean, 4 * contrast, 4 * balance], axis=-1)

    cases = get_adapter("shapes").cases()
    eroded = lambda m, k: ndimage.binary_erosion(m == k, iterations=3)  # noqa: E731  (skip borders)
    train = [c.load() for c in cases[:30]]
    feats = {k: np.concatenate([features(s.image[..., 0])[eroded(s.mask, k)] for s in train]) for k in range(4)}
    centroids = np.stack([feats[k].mean(axis=0) for k in range(4)])
    hits, counts = np.zeros(4), np.zeros(4)
    for sample in (c.load() for c in cases[200:220]):
        f = features(sample.image[..., 0])
        for k in range(4):
            inside = eroded(sample.mask, k)
            predicted = np.argmin(((f[inside][:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
            hits[k] += (predicted == k).sum()
            counts[k] += inside.sum()
    recall = hits / counts          # per class, so the dominant background cannot carry the score
    assert (recall > 0.8).all(), recall
