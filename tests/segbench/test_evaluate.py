"""Evaluation: per-image rows and summaries, CSV/JSON files, scoring folders of PNG/GIF masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairgen.core.errors import UserError
from segbench.evaluate import (evaluate_folders, evaluate_predictions, parse_spacing, read_mask,
                               read_per_image_csv, write_per_image_csv, write_summary)
from segbench.metrics import dice

CITYSCAPES = ["void", "flat", "construction", "object", "nature", "sky", "human", "vehicle"]


def blob(shape=(12, 14), top=2, left=3, size=5) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + size, left:left + size] = 1
    return mask


def test_evaluate_predictions_binary():
    preds = [blob(), blob(left=4), np.zeros((12, 14), np.uint8)]
    gts = [blob(), blob(), blob()]
    rows, summary = evaluate_predictions(preds, gts, ["a", "b", "c"], [(0.5, 0.5)] * 3, ["background", "lung"])
    assert [row["case"] for row in rows] == ["a", "b", "c"] and list(rows[0])[1] == "dice"
    assert rows[1]["dice"] == pytest.approx(dice(preds[1], gts[1])) and rows[1]["hausdorff_mm"] == 0.5
    assert math.isnan(rows[2]["hausdorff_mm"]) and rows[2]["dice"] == 0.0
    assert summary["n_cases"] == 3 and summary["spacing_known"] and summary["distance_unit"] == "mm"
    assert summary["metrics"]["dice"]["n"] == 3 and summary["n_undefined"]["hausdorff_mm"] == 1
    assert summary["metrics"]["hausdorff_mm"]["mean"] == pytest.approx(0.25)
    assert "confusion" not in summary


def test_evaluate_predictions_multiclass_and_unknown_spacing():
    gt = np.array([[1, 1, 6], [7, 7, 0]], np.uint8)
    pred = np.array([[1, 3, 6], [7, 7, 7]], np.uint8)
    rows, summary = evaluate_predictions([pred, gt], [gt, gt], ["x", "y"], [None, None], CITYSCAPES)
    assert not summary["spacing_known"] and summary["distance_unit"] == "px"
    dataset = summary["confusion"]
    assert dataset["iou_per_class"]["flat"] == pytest.approx(3 / 4)      # 3 TP over both images, 1 FN
    assert dataset["iou_per_class"]["vehicle"] == pytest.approx(4 / 5)
    assert math.isnan(dataset["iou_per_class"]["sky"])
    expected = np.mean([3 / 4, 0.0, 1.0, 4 / 5])                              # flat, object, human, vehicle
    assert dataset["miou"] == pytest.approx(expected)
    assert dataset["miou_excl_human_object"] == pytest.approx(np.mean([3 / 4, 4 / 5]))
    assert summary["metrics"]["miou"]["n"] == 2 and rows[1]["miou"] == 1.0


def test_evaluate_predictions_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="case ids"):
        evaluate_predictions([blob()], [blob()], [], None, ["bg", "fg"])
    with pytest.raises(ValueError, match="unique"):
        evaluate_predictions([blob()] * 2, [blob()] * 2, ["a", "a"], None, ["bg", "fg"])
    with pytest.raises(ValueError, match="'b'"):
        evaluate_predictions([blob()] * 2, [blob()] * 2, ["a", "b"], [(1.0, 1.0), None], ["bg", "fg"])
    with pytest.raises(ValueError, match="case 'a'.*shape"):
        evaluate_predictions([blob((4, 4))], [blob()], ["a"], None, ["bg", "fg"])


def test_csv_round_trip_and_summary_json(tmp_path):
    rows = [{"case": "c1", "dice": 0.1234567890123, "hd95_mm": float("nan")}, {"case": "c2", "dice": 1.0}]
    write_per_image_csv(rows, tmp_path / "per_image.csv")
    lines = (tmp_path / "per_image.csv").read_text().splitlines()
    assert lines == ["case,dice,hd95_mm", "c1,0.1234567890123,", "c2,1.0,"]
    back = read_per_image_csv(tmp_path / "per_image.csv")
    assert back[0]["case"] == "c1" and back[0]["dice"] == rows[0]["dice"] and math.isnan(back[1]["hd95_mm"])
    write_summary({"metrics": {"dice": {"mean": float("nan"), "n": np.int64(0)}}}, tmp_path / "summary.json")
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["dice"] == {"mean": None, "n": 0}
    (tmp_path / "bad.csv").write_text("name,dice\nx,1\n")
    with pytest.raises(UserError, match="bad.csv"):
        read_per_image_csv(tmp_path / "bad.csv")


def save(mask: np.ndarray, path: Path, palette: list[int] | None = None) -> None:
    image = Image.fromarray(mask, "P" if palette else None)
    if palette:
        image.putpalette(palette)
    image.save(path)


def make_folders(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gts = [blob(), blob(top=4), blob(size=7)]
    preds = [blob(), blob(top=5), blob(size=6)]
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        save(gt * 255, gt_dir / f"case{i}.gif")                                # 0/255 GIF
        if i == 2:
            save(pred, pred_dir / f"case{i}.png", palette=[0, 0, 0, 255, 0, 0])  # colour palette: index = class
        else:
            save(pred * 255, pred_dir / f"case{i}.png")                          # 0/255 PNG
    return pred_dir, gt_dir, preds, gts


def test_evaluate_folders_end_to_end(tmp_path):
    pred_dir, gt_dir, preds, gts = make_folders(tmp_path)
    summary = evaluate_folders(pred_dir, gt_dir, (0.35, 0.7), None, tmp_path / "out")
    _, expected = evaluate_predictions(preds, gts, ["case0", "case1", "case2"], [(0.35, 0.7)] * 3,
                                       ["background", "foreground"])
    assert summary["metrics"] == expected["metrics"] and summary["class_names"] == ["background", "foreground"]
    rows = read_per_image_csv(tmp_path / "out" / "per_image.csv")
    assert [row["case"] for row in rows] == ["case0", "case1", "case2"] and rows[0]["dice"] == 1.0
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["metrics"]["dice"]["mean"] == pytest.approx(expected["metrics"]["dice"]["mean"])


def test_read_mask_formats(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    save(labels, tmp_path / "grey.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png", 3), labels)
    save(labels, tmp_path / "indexed.gif", palette=[0, 0, 0, 9, 9, 9, 0, 0, 0])  # one colour, one label (as prepare)
    np.testing.assert_array_equal(read_mask(tmp_path / "indexed.gif", 10), np.where(labels == 1, 9, 0))
    Image.fromarray(np.stack([labels * 100] * 3, axis=-1)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="label value 200"):
        read_mask(tmp_path / "rgb.png", 3)


@pytest.mark.parametrize("problem", ["missing", "unmatched", "size", "label", "unreadable"])
def test_evaluate_folders_errors_name_the_file(tmp_path, problem):
    pred_dir, gt_dir, _, _ = make_folders(tmp_path)
    expected = {"missing": "nowhere", "unmatched": "other", "size": "case1.png", "label": "case0.png",
                "unreadable": "case2.png"}[problem]
    if problem == "missing":
        pred_dir = tmp_path / "nowhere"
    elif problem == "unmatched":
        for path in pred_dir.iterdir():
            path.rename(pred_dir / ("other_" + path.name))
    elif problem == "size":
        save(blob((10, 14)) * 255, pred_dir / "case1.png")
    elif problem == "label":
        save(blob() * 7, pred_dir / "case0.png")
    else:
        (pred_dir / "case2.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=expected) as info:
        evaluate_folders(pred_dir, gt_dir, None, None, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_parse_spacing():
    assert parse_spacing(None) is None and parse_spacing(" ") is None
    assert parse_spacing("0.7") == (0.7, 0.7) and parse_spacing("0.35, 0.7") == (0.35, 0.7)
    for bad in ("a", "0,1", "1,2,3", "-1"):
        with pytest.raises(UserError, match="--spacing"):
            parse_spacing(bad)
