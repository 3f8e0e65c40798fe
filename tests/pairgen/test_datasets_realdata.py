"""The adapters on the real dev copies in ../shared/data (skipped when absent). Quick: counts, one load, splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pairgen import shards, splits
from pairgen.datasets.registry import get_adapter
from pairgen.prepare import prepare

try:
    from tests.pairgen.dataset_trees import SHARED_DATA
except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
    from dataset_trees import SHARED_DATA

SCR = SHARED_DATA / "scr-lung"
CAMVID = SHARED_DATA / "camvid"
pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not SCR.is_dir(), reason=f"{SCR} absent")
def test_scr_lung_dev_copy() -> None:
    cases = get_adapter("scr-lung", SCR).cases()
    assert len(cases) == 247 and sum(c.case_id.startswith("JPCLN") for c in cases) == 154
    sample = cases[0].load()
    assert sample.image.shape == (512, 512, 1) and sample.mask.shape == (1024, 1024)
    assert sample.spacing_mm == pytest.approx((0.35, 0.35))
    lung = sample.mask.astype(bool)[::2, ::2]
    # usual polarity: the (air-filled) left lung is darker than the image on average; it sits on the image right
    assert sample.image[..., 0][lung].mean() < sample.image.mean()
    assert np.nonzero(lung)[1].mean() > 256
    recorded = splits.load_protocol("scr-lung")["cases"]
    for fold in (1, 2, 3):
        assert splits.split_cases("scr-lung", cases, fold) == recorded[str(fold)]
        assert splits.compute_split(splits.load_protocol("scr-lung"), cases, fold) == recorded[str(fold)]


@pytest.mark.skipif(not SCR.is_dir(), reason=f"{SCR} absent")
def test_scr_lung_prepare_a_handful_via_links(tmp_path: Path) -> None:
    """Prepare 9 real cases through symlinks (the data is never copied) at 32×32."""
    names = [f"JPCLN{i:03d}" for i in range(1, 5)] + [f"JPCNN{i:03d}" for i in range(1, 6)]
    images, masks = tmp_path / "tree" / "images", tmp_path / "tree" / "masks" / "left lung"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for name in names:
        os.symlink(SCR / "images" / f"{name}.png", images / f"{name}.png")
        os.symlink(SCR / "masks" / "left lung" / f"{name}.gif", masks / f"{name}.gif")
    with pytest.warns(UserWarning, match="9 cases present"):
        out = prepare("scr-lung", str(tmp_path / "tree"), 1, 32, 32, out=tmp_path / "out", show_progress=False)
    test = shards.load_shards(out / "test")
    assert test.full_masks[0].shape == (1024, 1024) and test.images.shape[1:] == (32, 32, 1)
    lung_fraction = test.masks.mean()
    assert 0.05 < lung_fraction < 0.25      # a left lung covers roughly a tenth of the film
    train = shards.load_shards(out / "train")
    # the dev PNGs are air-bright; after the polarity vote the lungs are darker than the image on average
    assert train.images[..., 0][train.masks == 1].mean() < train.images.mean() - 20


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} absent")
def test_camvid_dev_copy() -> None:
    cases = get_adapter("camvid", CAMVID).cases()
    assert len(cases) == 468
    assert sum(c.source_split == "train" for c in cases) == 367 and sum(c.source_split == "val" for c in cases) == 101
    sample = cases[0].load()
    assert sample.image.shape == (360, 480, 3) and sample.mask.shape == (360, 480) and sample.mask.max() <= 7
    split = splits.split_cases("camvid", cases, 1)
    assert split == splits.load_protocol("camvid")["cases"]["1"]
    assert splits.compute_split(splits.load_protocol("camvid"), cases, 1) == split
    assert {k: len(v) for k, v in split.items()} == {"train": 318, "val": 49, "test": 101}
