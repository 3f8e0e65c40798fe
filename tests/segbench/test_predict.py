"""`segbench predict`: class-id PNGs at each input's own resolution, gray/RGB conversion, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairgen.core.errors import UserError
from segbench.predict import load_weights, predict_folder, predict_logits, save_weights
from segbench.unet import UNet


def make_run(run_dir: Path, foreground: bool | None = None, in_channels: int = 1, n_classes: int = 2) -> Path:
    """A run dir with weights.pt of a 32×32 U-Net; foreground True/False forces every pixel's decision."""
    torch.manual_seed(0)
    n_outputs = 1 if n_classes == 2 else n_classes
    model = UNet(in_channels, n_outputs, depth=2, filters=4)
    if foreground is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.fill_(3.0 if foreground else -3.0)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(run_dir / "weights.pt", model, {
        "in_channels": in_channels, "n_classes": n_classes, "depth": 2, "filters": 4, "pooling": "avg",
        "class_names": ["background"] + [f"class{i}" for i in range(1, n_classes)], "height": 32, "width": 32})
    return run_dir


def write_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Gray, RGB and 16-bit inputs of different sizes (none at the training resolution); name → (rows, cols)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (40, 24, 3), dtype=np.uint8)).save(folder / "color.jpg")
    Image.fromarray(rng.integers(0, 4000, (33, 65), dtype=np.uint16)).save(folder / "deep.png")
    (folder / "notes.txt").write_text("not an image")
    return {"gray": (50, 70), "color": (40, 24), "deep": (33, 65)}


@pytest.mark.parametrize("foreground, expected", [(True, 1), (False, 0)])
def test_masks_at_input_resolution_as_class_ids(tmp_path: Path, foreground: bool, expected: int) -> None:
    run_dir = make_run(tmp_path / "run", foreground=foreground)
    sizes = write_images(tmp_path / "images")
    assert predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu") == 3
    for name, shape in sizes.items():
        mask = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert mask.shape == shape and mask.dtype == np.uint8
        assert np.all(mask == expected)   # class id 1, not 255


def test_rgb_model_on_gray_input_and_multiclass(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", in_channels=3, n_classes=4)
    write_images(tmp_path / "images")
    predict_folder(run_dir, tmp_path / "images" / "gray.png", tmp_path / "out", device="cpu")   # a single file
    mask = np.asarray(Image.open(tmp_path / "out" / "gray.png"))
    assert mask.shape == (50, 70) and mask.max() < 4


def test_same_prediction_as_the_evaluation_path(tmp_path: Path) -> None:
    from segbench.postprocess import predict_full

    run_dir = make_run(tmp_path / "run")
    image = np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu")
    model, _ = load_weights(run_dir, torch.device("cpu"))
    logits = next(predict_logits(model, image[None, :, :, None], torch.device("cpu")))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")),
                                  predict_full(logits, (32, 32), True))


def test_largest_component_follows_the_run_config(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "config.json").write_text(json.dumps({"postprocess_lcc": False}))
    from segbench.predict import _single_object

    assert _single_object(run_dir, 2) is False
    assert _single_object(tmp_path, 2) is True and _single_object(tmp_path, 3) is False


def test_refusals(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    with pytest.raises(UserError, match="no such run directory"):
        predict_folder(tmp_path / "missing", tmp_path / "images", tmp_path / "out", device="cpu")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(UserError, match="weights.pt: no weights"):
        predict_folder(tmp_path / "empty-run", tmp_path / "images", tmp_path / "out", device="cpu")
    bad = tmp_path / "bad-run"
    bad.mkdir()
    (bad / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="weights.pt: not a loadable"):
        predict_folder(bad, tmp_path / "images", tmp_path / "out", device="cpu")
    run_dir = make_run(tmp_path / "run")
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        predict_folder(run_dir, tmp_path / "no-images", tmp_path / "out", device="cpu")
    with pytest.raises(UserError, match="no such file or folder"):
        predict_folder(run_dir, tmp_path / "nowhere", tmp_path / "out", device="cpu")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="x.png: unreadable"):
        predict_folder(run_dir, tmp_path / "broken", tmp_path / "out", device="cpu")


def test_weights_file_is_weights_only(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    payload = torch.load(run_dir / "weights.pt", weights_only=True)
    assert payload["meta"] == {"in_channels": 1, "n_classes": 2, "depth": 2, "filters": 4, "pooling": "avg",
                               "class_names": ["background", "class1"], "height": 32, "width": 32}


@pytest.mark.filterwarnings("ignore:scr-lung. 16 cases present")
def test_scr_inputs_read_as_prepare_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An air-bright (inverted) SCR PNG tree: the arrays predict hands the network are prepare's images, bit for bit,
    not the inverted files as stored (the generic reader's view)."""
    import segbench.predict as predict_module
    from pairgen.prepare import prepare
    from pairgen.shards import load_shards

    try:
        from tests.pairgen import dataset_trees as trees
    except ImportError:  # tests/pairgen is not a package: pytest put its folder on sys.path
        import dataset_trees as trees
    names = [f"JPCLN{i:03d}" for i in range(1, 17)]
    root = trees.scr_png_tree(tmp_path / "tree", names, structures=("left lung",), air_bright=True)
    shards = prepare("scr-lung", str(root), 1, 32, 32, workspace=tmp_path / "ws", show_progress=False)
    test = load_shards(shards / "test")
    run_dir = make_run(tmp_path / "run")
    (run_dir / "config.json").write_text(json.dumps({"dataset": "scr-lung"}))
    fed: list[np.ndarray] = []
    real_logits = predict_module.predict_logits

    def spy(model, images, device, *args, **kwargs):
        fed.append(np.array(images[0]))
        return real_logits(model, images, device, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_logits", spy)
    (tmp_path / "images").mkdir()
    for case in test.case_id:
        (tmp_path / "images" / f"{case}.png").write_bytes((root / "images" / f"{case}.png").read_bytes())
    predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu")
    assert len(fed) == len(test.case_id) > 0
    for image, prepared in zip(fed, test.images):   # both in sorted case order
        np.testing.assert_array_equal(image, prepared)
    assert fed[0][2, 16, 0] > 128 > fed[0][10, 10, 0]   # usual polarity: body bright, lung field dark
    (run_dir / "config.json").write_text(json.dumps({"dataset": "no-such-dataset"}))   # generic reader: as stored
    fed.clear()
    predict_folder(run_dir, tmp_path / "images", tmp_path / "out2", device="cpu")
    assert np.abs(fed[0].astype(int) - (255 - test.images[0].astype(int))).max() <= 1   # inverted (±1 rounding)


def test_like_writes_masks_at_the_ground_truth_size(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", foreground=True)
    sizes = write_images(tmp_path / "images")
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((100, 140), np.uint8)).save(tmp_path / "gt" / "gray.gif")
    Image.fromarray(np.zeros((80, 48), np.uint8)).save(tmp_path / "gt" / "color.png")
    with pytest.raises(UserError, match="--like .*gt: no mask .*for deep"):
        predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu", like=tmp_path / "gt")
    assert not (tmp_path / "out").exists()   # refused before any work
    Image.fromarray(np.zeros((66, 130), np.uint8)).save(tmp_path / "gt" / "deep.png")
    predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu", like=tmp_path / "gt")
    shapes = {name: np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).shape for name in sizes}
    assert shapes == {"gray": (100, 140), "color": (80, 48), "deep": (66, 130)}
