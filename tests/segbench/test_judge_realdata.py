"""`segbench score` on a handful of the real dev copies in ../shared/data (linked, never copied; skipped when absent).

An untrained tiny generator against a quickly trained tiny judge: plumbing on real images and real class lists
(SCR lung: Dice of one class; CamVid: mIoU of several), not quality.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from pairgen.prepare import prepare
from segbench.judge import score
from tests.fixtures import SHARED_DATA
from tests.segbench.test_run import make_gan_checkpoint

pytestmark = pytest.mark.realdata


def link_files(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.symlink(source / name, target / name)


def prepare_quietly(dataset: str, tree: Path, ws: Path, height: int, width: int, structures=()) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "only N cases present": a handful on purpose
        prepare(dataset, str(tree), 1, height, width, structures, out=ws / dataset / "fold1" / "real" /
                f"{height}x{width}", show_progress=False)


@pytest.mark.skipif(not (SHARED_DATA / "scr-lung").is_dir(), reason="../shared/data/scr-lung absent")
def test_score_on_scr_lung(tmp_path: Path) -> None:
    scr = SHARED_DATA / "scr-lung"
    names = [p.stem for p in sorted((scr / "images").glob("*.png"))[:20]]
    link_files(scr / "images", tmp_path / "tree" / "images", [f"{n}.png" for n in names])
    link_files(scr / "masks" / "left lung", tmp_path / "tree" / "masks" / "left lung", [f"{n}.gif" for n in names])
    ws = tmp_path / "ws"
    prepare_quietly("scr-lung", tmp_path / "tree", ws, 32, 32)
    run_dir = ws / "scr-lung" / "fold1" / "gan" / "00000-tiny"
    make_gan_checkpoint(run_dir, dataset="scr-lung", class_names=("background", "left lung"))
    result = score(run_dir, ws, n=16, judge_preset="tiny", judge_iters=30, device="cpu")
    assert result["alignment_metric"] == "dice" and result["n_synthetic"] == 16
    assert 0 <= result["alignment"]["mean"] <= 1 and result["fd"] > result["scale"]["fd"] >= 0


@pytest.mark.skipif(not (SHARED_DATA / "camvid").is_dir(), reason="../shared/data/camvid absent")
def test_score_on_camvid(tmp_path: Path) -> None:
    camvid = SHARED_DATA / "camvid"
    for split, n in (("train", 24), ("val", 12)):
        names = [p.name for p in sorted((camvid / split).glob("*.png"))[:n]]
        for folder in (split, f"{split}annot"):
            link_files(camvid / folder, tmp_path / "tree" / folder, names)
    ws = tmp_path / "ws"
    prepare_quietly("camvid", tmp_path / "tree", ws, 32, 64)
    run_dir = ws / "camvid" / "fold1" / "gan" / "00000-tiny"
    from pairgen.datasets.registry import get_adapter

    classes = tuple(get_adapter("camvid", str(tmp_path / "tree")).class_names)
    make_gan_checkpoint(run_dir, dataset="camvid", class_names=classes, height=32, width=64, image_channels=3)
    result = score(run_dir, ws, n=16, judge_preset="tiny", judge_iters=30, device="cpu")
    assert result["alignment_metric"] == "miou" and len(classes) > 2
    assert 0 <= result["alignment"]["mean"] <= 1 and result["fd"] > result["scale"]["fd"] >= 0
