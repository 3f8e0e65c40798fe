"""segbench ceiling: the training-resolution ground truth scored at the full masks, on hand-built cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pairgen import shards
from segbench.ceiling import mask_logits, resolution_ceiling
from segbench.cli import app


def _test_split(directory: Path, low: list[np.ndarray], full: list[np.ndarray],
                class_names: tuple[str, ...] = ("background", "lung")) -> Path:
    n = len(low)
    arrays = {"images": np.zeros((n,) + low[0].shape + (1,), np.uint8), "masks": np.stack(low),
              "sample_index": np.arange(n, dtype=np.int64), "case_id": [f"case{i}" for i in range(n)],
              "spacing_mm": np.full((n, 2), 0.5, np.float32), "full_masks": full,
              "full_shapes": np.array([m.shape for m in full], np.int32)}
    attrs = {"kind": "real", "dataset": "toy", "split": "test", "fold": "fold1", "class_names": list(class_names)}
    directory.mkdir(parents=True)
    shards.write_manifest(directory, attrs, [shards.write_shard(directory / "shard-00000.h5", arrays, attrs)])
    return directory


def test_mask_logits_follow_the_unet_output_convention() -> None:
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    binary = mask_logits(mask > 0, 2)
    assert binary.shape == (1, 1, 2, 2) and binary[0, 0].tolist() == [[-10, 10], [10, -10]]
    multi = mask_logits(mask, 3)
    assert multi.shape == (1, 3, 2, 2)
    assert torch.equal(multi[0].argmax(0), torch.from_numpy(mask).long()) and float(multi.abs().min()) == 10


def test_ceiling_is_exact_for_block_shapes_and_loses_what_the_reduction_lost(tmp_path: Path) -> None:
    low = np.zeros((8, 8), np.uint8)
    low[2:6, 2:6] = 1                                   # a 4×4 block: at 16×16 exactly the 8×8 block [4:12]
    full_exact = np.kron(low, np.ones((2, 2), np.uint8))
    full_detail = full_exact.copy()
    full_detail[0, 15] = 1                              # one full-resolution pixel the 8×8 mask cannot hold
    summary = resolution_ceiling(_test_split(tmp_path / "test", [low, low], [full_exact, full_detail]),
                                 out=tmp_path / "out")
    rows = (tmp_path / "out" / "per_image.csv").read_text().splitlines()
    dice = [float(line.split(",")[rows[0].split(",").index("dice")]) for line in rows[1:]]
    assert dice[0] == pytest.approx(1.0)                # bicubic ±10 logits threshold on the block's border
    assert dice[1] == pytest.approx(2 * 64 / (64 + 65))  # 64 predicted pixels, 65 true ones
    assert summary["metrics"]["dice"]["mean"] == pytest.approx((1 + 128 / 129) / 2)
    assert summary["training_resolution"] == "8x8" and summary["postprocess_lcc"] is True
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_cases"] == 2


def test_ceiling_cli_prints_and_refuses_splits_without_full_masks(tmp_path: Path) -> None:
    low = np.zeros((8, 8), np.uint8)
    low[2:6, 2:6] = 1
    test_dir = _test_split(tmp_path / "test", [low], [np.kron(low, np.ones((2, 2), np.uint8))])
    result = CliRunner().invoke(app, ["ceiling", str(test_dir)])
    assert result.exit_code == 0 and "resolution ceiling at 8x8" in result.output
    arrays = {"images": np.zeros((1, 8, 8, 1), np.uint8), "masks": low[None], "sample_index": np.arange(1)}
    attrs = {"kind": "real", "dataset": "toy", "split": "train", "fold": "fold1", "class_names": ["bg", "lung"]}
    train = tmp_path / "train"
    train.mkdir()
    shards.write_manifest(train, attrs, [shards.write_shard(train / "shard-00000.h5", arrays, attrs)])
    # a user error: one line on stderr, exit status 2, no traceback
    proc = subprocess.run([sys.executable, "-m", "segbench", "ceiling", str(train)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no full-resolution masks" in proc.stderr and "Traceback" not in proc.stderr
