"""Promise 10: one reader for images and masks. `prepare`, `predict` and `evaluate` read a file the same way (a
palette image through its colours), with the same size limit and one-line errors; `predict` never overwrites its
inputs or merges two of them into one mask; a dataset whose masks hold one class only is refused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairgen.core.errors import UserError
from segbench.evaluate import evaluate_folders, read_mask
from segbench.predict import predict_folder
from tests.segbench.test_predict import make_run


def palette_gif(path: Path, labels: np.ndarray) -> Path:
    """A GIF whose palette maps indices 0 and 1 to the same colour (black): the foreground is invisible."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 0, 0, 0] + [255, 255, 255] * 254)
    image.save(path)
    return path


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG claiming width×height pixels (an IHDR and an empty IDAT): a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def test_a_palette_gif_reads_the_same_in_prepare_and_evaluate(tmp_path: Path) -> None:
    from pairgen.core.images import read_label_image

    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    path = palette_gif(tmp_path / "mask.gif", labels)
    assert np.asarray(Image.open(path)).max() == 1                      # index 1 is stored...
    np.testing.assert_array_equal(read_label_image(path), 0)            # ...but shows as background
    np.testing.assert_array_equal(read_mask(path, 2), read_label_image(path))   # evaluate agrees with prepare


def test_prepare_refuses_a_dataset_without_foreground(tmp_path: Path) -> None:
    from pairgen.prepare import check_dataset, prepare

    root = tmp_path / "tree"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"c{i:02d}.png")
        labels = np.zeros((16, 16), np.uint8)
        labels[4:12, 4:12] = 1
        palette_gif(root / "masks" / f"c{i:02d}.gif", labels)
    problems = check_dataset("folder", str(root))
    assert len(problems) == 1 and "no foreground at all" in problems[0]
    with pytest.raises(UserError, match="no foreground at all"):
        prepare("folder", str(root), 1, 8, 8, workspace=tmp_path / "ws", show_progress=False)
    assert not (tmp_path / "ws").exists()


def test_predict_refuses_an_out_that_holds_its_inputs(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    original = np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8)
    Image.fromarray(original).save(images / "a.png")
    with pytest.raises(UserError, match="holds the input images"):
        predict_folder(run_dir, images, images, device="cpu")
    np.testing.assert_array_equal(np.asarray(Image.open(images / "a.png")), original)   # untouched


def test_predict_refuses_two_inputs_with_one_mask_name(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.gif", "b.jpg"):
        Image.fromarray(np.full((20, 20), 100, np.uint8)).save(images / name)
    with pytest.raises(UserError, match="b.gif and b.jpg would both be written as b.png"):
        predict_folder(run_dir, images, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", [12000, 30000])
def test_oversized_images_are_one_line_errors_in_every_reader(tmp_path: Path, side: int) -> None:
    """30000² was a DecompressionBombError traceback in predict and evaluate; 12000² took predict 8 minutes."""
    from pairgen.core.images import read_image, read_label_image

    run_dir = make_run(tmp_path / "run")
    (tmp_path / "images").mkdir()
    bomb = header_only_png(tmp_path / "images" / "bomb.png", side, side)
    for read in (lambda: read_image(bomb, 1), lambda: read_label_image(bomb), lambda: read_mask(bomb, 2),
                 lambda: predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu")):
        with pytest.raises(UserError, match=r"bomb.png: .*pixels"):   # ours, or PIL's bomb limit (2× 89 M)
            read()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "gt" / "bomb.png")
    with pytest.raises(UserError, match="bomb.png"):
        evaluate_folders(tmp_path / "images", tmp_path / "gt", None, None, tmp_path / "eval")


def test_predict_records_its_classes_and_evaluate_reads_them(tmp_path: Path) -> None:
    """`evaluate` without --classes on a 4-class run's masks used to fail ('label value 3 outside the 2 classes')."""
    run_dir = make_run(tmp_path / "run", n_classes=4)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)).save(
        tmp_path / "images" / "a.png")
    predict_folder(run_dir, tmp_path / "images", tmp_path / "pred", device="cpu")
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.full((24, 24), 3, np.uint8)).save(tmp_path / "gt" / "a.png")
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", None, None, tmp_path / "eval",
                               metrics="overlap")
    assert summary["class_names"] == ["background", "class1", "class2", "class3"]
    assert "dice_class3" in summary["metrics"] and not any("hd95" in k for k in summary["metrics"])
