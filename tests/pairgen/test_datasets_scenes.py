"""cityscapes and camvid adapters: official layouts, label tables, category mapping pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairgen.datasets.registry import get_adapter
from pairgen.datasets.camvid import NATIVE_CLASSES
from pairgen.datasets.cityscapes import CATEGORIES, LABELS
from pairgen.core.errors import UserError
from pairgen.prepare import check_dataset

try:
    from tests.pairgen import dataset_trees as trees
except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
    import dataset_trees as trees

# written independently of the adapter, from the category ranges
CATEGORY_OF_ID = {**{i: 0 for i in range(0, 7)}, **{i: 1 for i in range(7, 11)}, **{i: 2 for i in range(11, 17)},
                  **{i: 3 for i in range(17, 21)}, 21: 4, 22: 4, 23: 5, 24: 6, 25: 6,
                  **{i: 7 for i in range(26, 34)}}
FRAMES = {"train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
          "val": ["frankfurt_000000_000294"]}


def test_cityscapes_label_table_is_complete() -> None:
    assert sorted(LABELS) == list(range(-1, 34))
    assert {LABELS[i][1] for i in LABELS} == set(CATEGORIES)
    for label_id, category in CATEGORY_OF_ID.items():
        assert CATEGORIES.index(LABELS[label_id][1]) == category, LABELS[label_id]
    assert LABELS[-1] == ("license plate", "vehicle")   # cityscapesScripts: id -1, category vehicle


def test_cityscapes_official_tree_maps_every_pixel(tmp_path: Path) -> None:
    root = trees.cityscapes_tree(tmp_path / "cityscapes", FRAMES)
    adapter = get_adapter("cityscapes", tmp_path)               # searched below the given root
    assert adapter.class_names == ["void", "flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    assert adapter.channels == 3
    cases = adapter.cases()
    assert [c.case_id for c in cases] == sorted(FRAMES["train"] + FRAMES["val"])
    assert {c.case_id: c.source_split for c in cases}["frankfurt_000000_000294"] == "val"
    for k, case in enumerate(c for c in cases if c.source_split == "train"):
        sample = case.load()
        assert sample.image.shape == (8, 16, 3) and sample.image.dtype == np.float32
        ids = ((np.arange(8 * 16) + k) % 34).reshape(8, 16)
        expected = np.vectorize(CATEGORY_OF_ID.get)(ids)
        np.testing.assert_array_equal(sample.mask, expected)
        assert sample.spacing_mm is None
    assert check_dataset("cityscapes", str(root)) == []


def test_cityscapes_root_from_env_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(UserError, match="CITYSCAPES_DATASET"):
        get_adapter("cityscapes", None).cases()
    root = trees.cityscapes_tree(tmp_path / "cs", FRAMES)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    assert len(get_adapter("cityscapes", None).cases()) == 4
    with pytest.raises(UserError, match="no leftImg8bit/ folder"):
        get_adapter("cityscapes", tmp_path / "cs" / "gtFine").cases()
    bad = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    trees.write_png(bad, np.array([[7, 34], [255, 0]], np.uint8))
    case = get_adapter("cityscapes", root).cases()[0]
    with pytest.raises(UserError, match=r"aachen_000000_000019_gtFine_labelIds.png: unexpected label values 34, 255"):
        case.load()
    trees.write_png(bad, np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="labels are 4x4, the image .* is 8x16"):
        case.load()
    (root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="frankfurt_000000_000294_leftImg8bit.png: no labels"):
        get_adapter("cityscapes", root).cases()


CAMVID_TO_CATEGORY = {0: "sky", 1: "construction", 2: "object", 3: "flat", 4: "flat", 5: "nature", 6: "object",
                      7: "construction", 8: "vehicle", 9: "human", 10: "human", 11: "void"}


@pytest.mark.parametrize("categories", [True, False])
def test_camvid_segnet_tree_with_lists(tmp_path: Path, categories: bool) -> None:
    trees.camvid_tree(tmp_path / "SegNet" / "CamVid", {"train": 3, "val": 2, "test": 1})
    adapter = get_adapter("camvid", tmp_path, categories=categories)
    cases = adapter.cases()
    assert len(cases) == 6 and [c.case_id for c in cases] == sorted(c.case_id for c in cases)
    assert sorted(c.source_split for c in cases) == ["test", "train", "train", "train", "val", "val"]
    sample = next(c for c in cases if c.case_id == "tr001_000001").load()
    native = ((np.arange(48) + 1) % 12).reshape(6, 8)
    if categories:
        assert adapter.class_names == CATEGORIES
        expected = np.vectorize(lambda i: CATEGORIES.index(CAMVID_TO_CATEGORY[i]))(native)
    else:
        assert adapter.class_names == ["void", *NATIVE_CLASSES] and len(adapter.class_names) == 12
        expected = np.where(native == 11, 0, native + 1)
    np.testing.assert_array_equal(sample.mask, expected)
    assert sample.image.shape == (6, 8, 3)


def test_camvid_without_lists_and_errors(tmp_path: Path) -> None:
    root = trees.camvid_tree(tmp_path, {"train": 2, "val": 2}, with_lists=False)
    assert [c.source_split for c in get_adapter("camvid", root).cases()].count("val") == 2
    trees.write_png(root / "trainannot" / "tr000_000000.png", np.full((6, 8), 12, np.uint8))
    (root / "valannot" / "va001_000001.png").unlink()
    problems = check_dataset("camvid", str(root))
    assert len(problems) == 2, problems
    assert any("va001_000001.png: no labels" in p for p in problems)
    assert any("tr000_000000.png: unexpected label values 12" in p for p in problems)
    with pytest.raises(UserError, match="no train/ \\+ trainannot/ folders"):
        get_adapter("camvid", tmp_path / "valannot").cases()


def test_camvid_list_entry_missing_on_disk(tmp_path: Path) -> None:
    root = trees.camvid_tree(tmp_path, {"train": 2, "val": 1})
    (root / "train" / "tr001_000001.png").unlink()
    with pytest.raises(UserError, match="tr001_000001.png: listed in train.txt but missing"):
        get_adapter("camvid", root).cases()
