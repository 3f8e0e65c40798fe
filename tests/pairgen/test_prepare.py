"""prepare / check_dataset / dataset_info: shard shapes and dtypes, label preservation, idempotence."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.prepare import dataset_info, prepare, resize_image, resize_mask
from pairgen.verify import verify_directory
from pairgen.core.workspace import real_dir

try:
    from tests.pairgen import dataset_trees as trees
except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
    import dataset_trees as trees

SCR_NAMES = [f"JPCLN{i:03d}" for i in range(1, 11)] + [f"JPCNN{i:03d}" for i in range(1, 5)]


def test_resize_mask_never_invents_ids() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 2                                   # ids 0 and 2 meet: interpolation would create 1s
    mask[10:12, 10:12] = 5                             # a speck smaller than one output pixel
    small = resize_mask(mask, 16, 16)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 2}
    np.testing.assert_array_equal(small, np.kron(np.array([[0, 2]], np.uint8), np.ones((16, 8), np.uint8)))
    odd = resize_mask(mask, 20, 12)                    # non-integer factors
    assert set(np.unique(odd)) <= {0, 2, 5} and (odd[:, :6] == 0).all() and (odd[:, 6:] == 2).all()
    big = resize_mask(np.array([[1, 3], [0, 1]], np.uint8), 4, 4)
    np.testing.assert_array_equal(big, np.array([[1, 1, 3, 3], [1, 1, 3, 3], [0, 0, 1, 1], [0, 0, 1, 1]]))
    majority = np.zeros((4, 4), np.uint8)
    majority[:3, :3] = 1                                # 9 of 16 pixels
    assert resize_mask(majority, 1, 1)[0, 0] == 1


def test_resize_image_is_area_average_to_uint8() -> None:
    image = np.zeros((8, 8, 3), np.float32)
    image[:4, :4] = 1.0
    image[::2, ::2, 2] = 1.0                           # checker in blue: averages to 0.25 per 2×2 block
    small = resize_image(image, 4, 4)
    assert small.dtype == np.uint8 and small.shape == (4, 4, 3)
    assert small[0, 0, 0] == 255 and small[3, 3, 0] == 0
    assert small[3, 3, 2] == 64                        # round(0.25·255)


def test_prepare_shapes_writes_three_valid_splits_and_is_idempotent(tmp_path: Path) -> None:
    out = prepare("shapes", None, 1, 32, 32, workspace=tmp_path, show_progress=False)
    assert out == real_dir(tmp_path, "shapes", "fold1", 32, 32)
    sizes = {}
    for split in ("train", "val", "test"):
        assert verify_directory(out / split) == []
        data = shards.load_shards(out / split)
        sizes[split] = len(data)
        assert data.images.shape == (len(data), 32, 32, 1) and data.images.dtype == np.uint8
        assert data.masks.shape == (len(data), 32, 32) and data.masks.max() <= 3
        assert data.attrs["kind"] == "real" and data.attrs["fold"] == "fold1" and data.attrs["split"] == split
        assert data.class_names == ["background", "disc", "square", "triangle"]
        assert data.case_id == sorted(data.case_id) and data.spacing_mm is None
    assert sizes == {"train": 180, "val": 60, "test": 60}
    test = shards.load_shards(out / "test")
    assert len(test.full_masks) == 60 and test.full_masks[0].shape == (128, 128)
    # the 32 px mask is the 4×4 majority of the full one
    np.testing.assert_array_equal(test.masks[3], resize_mask(test.full_masks[3], 32, 32))
    stamp = (out / "train" / "shard-00000.h5").stat().st_mtime_ns
    assert prepare("shapes", None, 1, 32, 32, workspace=tmp_path, show_progress=False) == out
    assert (out / "train" / "shard-00000.h5").stat().st_mtime_ns == stamp       # nothing rewritten


def test_prepare_scr_tree_full_masks_spacing_and_fraction(tmp_path: Path) -> None:
    root = trees.scr_png_tree(tmp_path / "scr", SCR_NAMES)
    with pytest.warns(UserWarning, match="14 cases present"):
        out = prepare("scr-lung", str(root), 2, 16, 16, ("left lung", "heart"), out=tmp_path / "out",
                      show_progress=False)
    test = shards.load_shards(out / "test")
    assert test.full_masks[0].shape == (128, 128) and test.masks.shape[1:] == (16, 16)
    np.testing.assert_allclose(test.spacing_mm, 2.8)
    assert test.class_names == ["background", "left lung", "heart"]
    assert set(np.unique(test.full_masks[0])) == {0, 1, 2}
    with h5py.File(out / "test" / "shard-00000.h5") as h5:
        assert h5.attrs["fold"] == "fold2" and h5.attrs["height"] == 16 and h5.attrs["dataset"] == "scr-lung"
    train = shards.load_shards(out / "train")
    # polarity kept: the (dark) lung region is darker than the rest in every training image
    lung = train.masks == 1
    assert train.images[..., 0][lung].mean() < 80 < train.images[..., 0][~lung & (train.masks == 0)].mean()
    all_ids = sorted(train.case_id + shards.load_shards(out / "val").case_id + test.case_id)
    assert all_ids == SCR_NAMES
    with pytest.warns(UserWarning):
        low = prepare("scr-lung", str(root), 2, 16, 16, ("left lung", "heart"), workspace=tmp_path / "ws",
                      train_fraction=0.5, show_progress=False)
    assert low == real_dir(tmp_path / "ws", "scr-lung", "fold2-frac50", 16, 16)
    assert len(shards.load_shards(low / "train")) == round(len(train) * 0.5)


def test_prepare_refuses_a_bad_tree_and_writes_nothing(tmp_path: Path) -> None:
    root = trees.folder_tree(tmp_path / "data", 12)
    (root / "images" / "img03.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    trees.write_png(root / "masks" / "img05.png", np.full((16, 16), 9, np.uint8))
    with pytest.raises(UserError, match=r"2 problem\(s\) in the folder data, nothing written: .*img03.png.*img05.png"):
        prepare("folder", str(root), 1, 8, 8, out=tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="the val split is empty"):
        prepare("folder", str(trees.folder_tree(tmp_path / "two", 2)), 1, 8, 8, out=tmp_path / "o2",
                show_progress=False)


def test_dataset_info_and_argument_errors(tmp_path: Path) -> None:
    assert dataset_info("shapes", None) == (1, ["background", "disc", "square", "triangle"])
    assert dataset_info("scr-lung", None) == (1, ["background", "left lung"])
    assert dataset_info("scr-lung", None, ("right lung", "left lung")) == (1, ["background", "right lung", "left lung"])
    assert dataset_info("camvid", None)[0] == 3 and len(dataset_info("cityscapes", None)[1]) == 8
    rgb = trees.folder_tree(tmp_path / "rgb", 1, rgb=True)
    assert dataset_info("folder", str(rgb), ("cell", "nucleus")) == (3, ["background", "cell", "nucleus"])
    with pytest.raises(UserError, match="--structures applies to scr-lung"):
        dataset_info("camvid", None, ("road",))
    with pytest.raises(UserError, match="at least 4"):
        prepare("shapes", None, 1, 2, 32, workspace=tmp_path, show_progress=False)
    with pytest.raises(UserError, match="--fold 2"):
        prepare("shapes", None, 2, 32, 32, workspace=tmp_path, show_progress=False)
