"""Promise 12: `segbench predict` on a run's own test images, then `segbench evaluate` against their masks,
reproduces the run's per-image metrics exactly: the same reader, the same resize as `pairgen prepare` (predict used
scikit-image's bilinear resize: -0.007 mIoU on CamVid), the same class names (recorded beside the masks), the same
largest-component and void rules.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairgen.prepare import prepare
from segbench.evaluate import evaluate_folders
from segbench.predict import predict_folder
from segbench.presets import make_config
from segbench.run import run
from tests.fixtures import SHARED_DATA


def per_image(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def assert_same_rows(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for case, row in theirs.items():
        assert ours[case].keys() == row.keys()
        for key in set(row) - {"case"}:
            a, b = float(row[key] or "nan"), float(ours[case][key] or "nan")
            assert a == b or (math.isnan(a) and math.isnan(b)), (case, key, row[key], ours[case][key])


def predict_and_evaluate(run_dir: Path, image_dir: Path, tmp_path: Path) -> Path:
    """Predict the run's test cases from their image files and score them against the full-resolution masks of
    the run's test shards (as PNGs); returns the evaluation folder."""
    from pairgen.shards import load_shards

    config = json.loads((run_dir / "config.json").read_text())
    test = load_shards(Path(config["real_shards"]) / "test")
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    files = {p.stem: p for p in image_dir.iterdir()}
    for case, mask in zip(test.case_id, test.full_masks):
        shutil.copy(files[case], tmp_path / "images" / files[case].name)
        Image.fromarray(mask).save(tmp_path / "gt" / f"{case}.png")
    predict_folder(run_dir, tmp_path / "images", tmp_path / "pred", device="cpu")
    class_names = json.loads((run_dir / "summary.json").read_text())["class_names"]   # also in pred/classes.json
    evaluate_folders(tmp_path / "pred", tmp_path / "gt", None, class_names, tmp_path / "eval")
    return tmp_path / "eval"


def test_shapes_run_reproduced_from_its_files(tmp_path: Path) -> None:
    """The embedded `shapes` cases written as a folder dataset (48², 4 classes), prepared at 32²."""
    from pairgen.datasets.shapes import CLASS_NAMES, make_shapes_case

    root = tmp_path / "tree"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(20):
        sample = make_shapes_case(0, i, 48)
        Image.fromarray(np.rint(sample.image[..., 0] * 255).astype(np.uint8)).save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(sample.mask).save(root / "masks" / f"s{i:02d}.png")
    ws = tmp_path / "ws"
    prepare("folder", str(root), 1, 32, 32, structures=tuple(CLASS_NAMES[1:]), workspace=ws, show_progress=False)
    config = make_config("folder", "tiny", fold_id="fold1", real_per_batch=4, synth_per_batch=0, max_iters=4,
                         min_iters=1, patience=10, val_every=2, filters=4)
    run_dir = run(config, ws, out=tmp_path / "run", show_progress=False)
    evaluation = predict_and_evaluate(run_dir, root / "images", tmp_path)
    assert_same_rows(per_image(evaluation / "per_image.csv"), per_image(run_dir / "per_image.csv"))


CAMVID = SHARED_DATA / "camvid"


@pytest.mark.slow       # ~5 min on 2 cores: prepare, a 4-iteration run, 101 frames scored twice with distances
@pytest.mark.realdata
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} absent")
def test_camvid_run_reproduced_from_its_files(tmp_path: Path) -> None:
    """A tiny CamVid run (32×64, scored at 360×480 with void ignored) and its 101 test frames from their files."""
    ws = tmp_path / "ws"
    prepare("camvid", str(CAMVID), 1, 32, 64, workspace=ws, show_progress=False)
    config = make_config("camvid", "tiny", fold_id="fold1", real_per_batch=4, synth_per_batch=0, max_iters=4,
                         min_iters=1, patience=10, val_every=2, filters=4)
    run_dir = run(config, ws, out=tmp_path / "run", show_progress=False)
    evaluation = predict_and_evaluate(run_dir, CAMVID / "val", tmp_path)   # fold 1 tests on the official val
    assert_same_rows(per_image(evaluation / "per_image.csv"), per_image(run_dir / "per_image.csv"))


SCR = SHARED_DATA / "scr-lung"


@pytest.mark.slow       # prepare 20 cases, a 4-iteration run, the test cases scored at 1024² with distances
@pytest.mark.realdata
@pytest.mark.skipif(not SCR.is_dir(), reason=f"{SCR} absent")
@pytest.mark.filterwarnings("ignore:scr-lung. 20 cases present")
def test_scr_run_reproduced_from_its_files(tmp_path: Path) -> None:
    """A tiny SCR left-lung run (32², scored at the 1024² masks, 0.35 mm) on 20 cases of the air-bright 512² PNG
    copy: predict reads them through the adapter (inverted, as prepare does) and --like writes them at 1024²."""
    from pairgen.shards import load_shards

    lungs = SCR / "masks" / "left lung"
    root = tmp_path / "tree"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "left lung").mkdir(parents=True)
    for image in sorted((SCR / "images").glob("JPC*.png"))[:20]:
        (root / "images" / image.name).symlink_to(image)
        (root / "masks" / "left lung" / f"{image.stem}.gif").symlink_to(lungs / f"{image.stem}.gif")
    ws = tmp_path / "ws"
    shards = prepare("scr-lung", str(root), 1, 32, 32, workspace=ws, show_progress=False)
    config = make_config("scr-lung", "tiny", fold_id="fold1", real_per_batch=4, synth_per_batch=0, max_iters=4,
                         min_iters=1, patience=10, val_every=2, filters=4)
    run_dir = run(config, ws, out=tmp_path / "run", show_progress=False)
    test_ids = load_shards(shards / "test").case_id
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    for case in test_ids:
        (tmp_path / "images" / f"{case}.png").symlink_to(SCR / "images" / f"{case}.png")
        (tmp_path / "gt" / f"{case}.gif").symlink_to(lungs / f"{case}.gif")
    predict_folder(run_dir, tmp_path / "images", tmp_path / "pred", device="cpu", like=lungs)
    evaluate_folders(tmp_path / "pred", tmp_path / "gt", (0.35, 0.35), None, tmp_path / "eval")
    ours, theirs = per_image(tmp_path / "eval" / "per_image.csv"), per_image(run_dir / "per_image.csv")
    assert len(theirs) == len(test_ids) > 0
    assert_same_rows(ours, theirs)
