"""scr-lung adapter: JSRT .IMG and PNG images, SCR GIF masks in flat and official fold trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairgen.datasets.registry import get_adapter
from pairgen.datasets.imageio import read_jsrt_raw
from pairgen.core.errors import UserError
from pairgen.prepare import check_dataset

try:
    from tests.pairgen import dataset_trees as trees
except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
    import dataset_trees as trees


def test_full_size_jsrt_img_is_inferred_and_inverted(tmp_path: Path) -> None:
    raw = np.full((2048, 2048), 4000, np.uint16)      # air: high raw value
    raw[1024:, :] = 95                                 # bone/tissue: low raw value
    path = trees.write_jsrt_img(tmp_path / "JPCLN001.IMG", raw)
    assert path.stat().st_size == 8388608
    image = read_jsrt_raw(path)
    assert image.shape == (2048, 2048, 1) and image.dtype == np.float32
    # usual polarity after reading: air dark, tissue bright
    assert image[0, 0, 0] == pytest.approx(1 - 4000 / 4095)
    assert image[2047, 0, 0] == pytest.approx(1 - 95 / 4095)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_jsrt_img_wrong_size_or_wrong_endianness_is_rejected(tmp_path: Path) -> None:
    odd = tmp_path / "JPCLN009.IMG"
    odd.write_bytes(b"\x00" * 8388607)                 # one byte short of 2048²·2
    with pytest.raises(UserError, match="JPCLN009.IMG.*not a square 16-bit JSRT image"):
        read_jsrt_raw(odd)
    little = trees.write_jsrt_img(tmp_path / "JPCLN010.IMG", np.full((8, 8), 4000, np.uint16))
    little.write_bytes(np.full((8, 8), 4000, "<u2").tobytes())   # byte-swapped: 0xA00F = 40975 > 4095
    with pytest.raises(UserError, match="JPCLN010.IMG.*exceeds 12 bits"):
        read_jsrt_raw(little)


def test_official_tree_with_spaces_and_fold_folders(tmp_path: Path) -> None:
    root = trees.scr_official_tree(tmp_path / "dl")
    adapter = get_adapter("scr-lung", root, structures=("left lung", "heart"))
    assert adapter.class_names == ["background", "left lung", "heart"]
    cases = adapter.cases()
    assert [c.case_id for c in cases] == ["JPCLN002", "JPCNN001"]
    sample = cases[0].load()
    assert sample.image.shape == (64, 64, 1) and sample.mask.shape == (32, 32)
    assert sample.image[0, 0, 0] > 0.7 and sample.image[0, 63, 0] < 0.3     # raw 800 → bright, 3000 → dark
    assert sample.mask[8, 6] == 1                      # lung only
    assert sample.mask[16, 14] == 2                    # lung and heart overlap: later structure wins
    assert sample.mask[24, 14] == 2 and sample.mask[30, 30] == 0
    assert sample.spacing_mm == pytest.approx((0.175 * 2048 / 32,) * 2)


def test_flat_png_tree_default_structure_and_spellings(tmp_path: Path) -> None:
    root = trees.scr_png_tree(tmp_path, ["JPCNN002", "JPCLN001"])
    adapter = get_adapter("scr-lung", root)
    assert adapter.class_names == ["background", "left lung"]
    assert adapter.channels == 1
    cases = adapter.cases()
    assert [c.case_id for c in cases] == ["JPCLN001", "JPCNN002"]
    sample = cases[0].load()
    assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask)) == {0, 1}
    assert sample.image.dtype == np.float32 and sample.image.shape == (64, 64, 1)
    assert sample.spacing_mm == pytest.approx((2.8, 2.8))   # 0.175·2048/128
    spelled = get_adapter("scr-lung", root, structures=("Left_Lung", "heart"))
    assert spelled.class_names == ["background", "left lung", "heart"]
    with pytest.raises(UserError, match="unknown SCR structure"):
        get_adapter("scr-lung", root, structures=("liver",))


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --root"):
        get_adapter("scr-lung", None).cases()
    with pytest.raises(UserError, match="no such folder"):
        get_adapter("scr-lung", tmp_path / "nope").cases()
    with pytest.raises(UserError, match="no JSRT images found below.*expected"):
        get_adapter("scr-lung", tmp_path).cases()


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    root = trees.scr_png_tree(tmp_path, ["JPCLN001", "JPCLN002"])
    (root / "masks" / "left lung" / "JPCLN002.gif").unlink()
    with pytest.raises(UserError, match=r"JPCLN002.png: no mask left lung/JPCLN002.gif"):
        get_adapter("scr-lung", root).cases()


def test_bad_values_size_and_corruption_are_user_errors(tmp_path: Path) -> None:
    root = trees.scr_png_tree(tmp_path, ["JPCLN001", "JPCLN002", "JPCLN003"])
    trees.write_png(root / "masks" / "left lung" / "JPCLN001.gif", np.full((128, 128), 128, np.uint8))
    trees.write_png(root / "images" / "JPCLN002.png", np.zeros((64, 48), np.uint8))
    (root / "images" / "JPCLN003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    cases = {c.case_id: c for c in get_adapter("scr-lung", root).cases()}
    with pytest.raises(UserError, match=r"JPCLN001.gif: unexpected label values 128"):
        cases["JPCLN001"].load()
    with pytest.raises(UserError, match=r"JPCLN002.png: image 64x48 and mask 128x128"):
        cases["JPCLN002"].load()
    with pytest.raises(UserError, match=r"JPCLN003.png: unreadable or corrupt image"):
        cases["JPCLN003"].load()


def test_check_dataset_reports_every_problem(tmp_path: Path) -> None:
    root = trees.scr_png_tree(tmp_path, ["JPCLN001", "JPCLN002", "JPCLN003", "JPCLN004"])
    (root / "masks" / "heart" / "JPCLN001.gif").unlink()                       # missing mask
    (root / "images" / "JPCLN002.png").unlink()                                 # mask without image
    (root / "masks" / "left lung" / "JPCLN003.gif").write_bytes(b"GIF89a")     # truncated
    trees.write_png(root / "copy" / "JPCLN004.png", np.zeros((64, 64), np.uint8))  # duplicate case
    problems = check_dataset("scr-lung", str(root), ("left lung", "heart"))
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "JPCLN001.png: no mask heart/JPCLN001.gif" in text
    assert "left lung/JPCLN002.gif: mask without an image" in text
    assert "heart/JPCLN002.gif: mask without an image" in text
    assert "JPCLN003.gif: unreadable or corrupt image" in text
    assert "case JPCLN004 also found" in text
    assert check_dataset("scr-lung", str(trees.scr_png_tree(tmp_path / "ok", ["JPCLN001"]))) == []


def test_png_polarity_is_detected_per_tree(tmp_path: Path) -> None:
    names = ["JPCLN001", "JPCLN002", "JPCNN001"]
    usual = get_adapter("scr-lung", trees.scr_png_tree(tmp_path / "usual", names)).cases()
    bright = get_adapter("scr-lung", trees.scr_png_tree(tmp_path / "bright", names, air_bright=True)).cases()
    for a, b in zip(usual, bright):
        np.testing.assert_allclose(a.load().image, b.load().image, atol=1e-6)   # both end in the usual polarity
    sample = usual[0].load()
    assert sample.image[..., 0][sample.mask[::2, ::2] == 1].mean() < 0.3 < sample.image.mean()   # lung dark
    forced = get_adapter("scr-lung", tmp_path / "bright", png_polarity="usual").cases()[0].load()
    np.testing.assert_allclose(forced.image, 1.0 - sample.image, atol=1e-6)
    with pytest.raises(UserError, match="png_polarity 'negative'"):
        get_adapter("scr-lung", tmp_path / "usual", png_polarity="negative")
