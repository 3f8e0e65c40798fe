"""Inference: a trained run's network on shard arrays (test evaluation) or on any folder of images.

`segbench predict --run RUN --images DIR --out DIR` writes one PNG per input image, at the input's own
resolution, holding CLASS IDS (0 = background, 1 = first foreground class, …) — not 0/255 — so the files feed
`segbench evaluate` and other tools unchanged (a binary mask looks black in an image viewer; scale it for display).
Pipeline per image: to the model's channels (gray ↔ RGB) → anti-aliased resize to the training resolution →
[-1, 1] → U-Net → bicubic upsampling of the logits back to the image's size → labels → largest connected
component for single-object tasks (thesis section 4.2).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from pairgen.core.torchio import load_state, save_state
from pairgen.core.devices import resolve_device
from pairgen.core.errors import UserError
from pairgen.shards import ShardSet
from pairgen.core.files import atomic_write_bytes
from segbench.mixing import uint8_to_model
from segbench.presets import SegConfig
from segbench.rundir import RunDir
from segbench.step import autocast_for
from segbench.unet import UNet, n_outputs_for

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff")


def weights_payload(model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """What weights.pt holds: the state dict plus what rebuilding the network and its inputs needs.

    meta: in_channels, n_classes, depth, filters, pooling, class_names (list of str), height, width.
    Tensors, ints and strings only, so torch.load(weights_only=True) reads it.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": "segbench-unet", "version": 1, "state_dict": state,
            "meta": {"in_channels": int(meta["in_channels"]), "n_classes": int(meta["n_classes"]),
                     "depth": int(meta["depth"]), "filters": int(meta["filters"]), "pooling": str(meta["pooling"]),
                     "class_names": [str(c) for c in meta["class_names"]],
                     "height": int(meta["height"]), "width": int(meta["width"])}}


def save_weights(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """weights.pt (weights_payload) through the checkpoint I/O both trainings share (atomic, weights_only)."""
    save_state(Path(path), weights_payload(model, meta))


def load_weights(run_dir: Path, device: torch.device) -> tuple[UNet, dict[str, Any]]:
    """(U-Net in eval mode on `device`, meta) from RUN/weights.pt; UserError naming the file when unusable."""
    path = RunDir(run_dir).weights
    if not Path(run_dir).is_dir():
        raise UserError(f"--run {run_dir}: no such run directory")
    if not path.is_file():
        raise UserError(f"{path}: no weights (the run has not finished training)")
    payload = load_state(path, "weights")
    try:
        meta = payload["meta"]
        model = UNet(meta["in_channels"], n_outputs_for(meta["n_classes"]), meta["depth"], meta["filters"],
                     meta["pooling"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:   # not a dict, missing keys, shape mismatch: all mean "not a usable weights.pt"
        raise UserError(f"{path}: not a segbench weights file ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return model.to(device).eval(), meta


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 16,
                   amp: bool = True) -> Iterator[torch.Tensor]:
    """Logits of uint8 images N×H×W×C, one float32 1×C_out×H×W tensor (on the CPU) per image, in order."""
    model.eval()
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size])).to(device)   # copy: inputs may be read-only
        batch = uint8_to_model(batch.permute(0, 3, 1, 2))
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, amp):
            logits = model(batch).float().cpu()
        yield from logits.split(1)


def evaluate_test(model: torch.nn.Module, test: ShardSet, config: SegConfig,
                  device: torch.device) -> tuple[list[dict], dict[str, Any], dict[str, np.ndarray]]:
    """Predict every test case at training resolution, upsample (bicubic) to its full mask, score.

    Returns (per-image rows, summary, arrays for predictions.npz). Without full_masks the training-resolution
    masks are the ground truth (and spacing is then unknown).
    """
    from segbench.postprocess import predict_full

    single_object = config.postprocess_lcc if config.postprocess_lcc is not None else len(test.class_names) == 2
    height, width = test.masks.shape[1:]
    full = ground_truth(test)
    preds_full, preds_low = [], []
    logits_per_case = tqdm(predict_logits(model, test.images, device, config.eval_batch, config.amp),
                           total=len(test.images), desc="evaluate", unit="case", disable=None, leave=False)
    for i, logits in enumerate(logits_per_case):
        preds_full.append(predict_full(logits, full[i].shape, single_object))
        preds_low.append(predict_full(logits, (height, width), single_object))
    rows, summary = score_test(test, preds_full, single_object)
    arrays = {"case_id": np.asarray(case_ids(test), dtype=str), "image": test.images, "mask": test.masks,
              "pred": np.stack(preds_low).astype(np.uint8)}
    return rows, summary, arrays


def ground_truth(test: ShardSet) -> list[np.ndarray]:
    """The masks a test split is scored against: its full-resolution masks, else the training-resolution ones."""
    return list(test.full_masks) if test.full_masks is not None else list(test.masks)


def case_ids(test: ShardSet) -> list[str]:
    """The split's case names, or sample<index> for splits that have none."""
    return test.case_id or [f"sample{int(i)}" for i in test.sample_index]


def score_test(test: ShardSet, preds: list[np.ndarray], single_object: bool) -> tuple[list[dict], dict[str, Any]]:
    """Score label maps (uint8, one per case, shaped like `ground_truth(test)`) against a real test split:
    per-image rows and the summary of `evaluate_predictions` (distances in mm where the split has spacing),
    with the whole-split confusion numbers as 'confusion', postprocess_lcc and evaluated_at."""
    from segbench.evaluate import evaluate_predictions

    spacings = None
    if test.full_masks is not None and test.spacing_mm is not None:
        spacings = [tuple(map(float, s)) for s in test.spacing_mm]
    rows, summary = evaluate_predictions(preds, ground_truth(test), case_ids(test), spacings, test.class_names)
    if isinstance(summary.get("dataset"), dict):   # whole-dataset confusion numbers; 'dataset' names the dataset
        summary["confusion"] = summary.pop("dataset")
    summary.update(postprocess_lcc=bool(single_object),
                   evaluated_at="full" if test.full_masks is not None else "training")
    return rows, summary


def _read_image(path: Path, channels: int) -> np.ndarray:
    """An image file as uint8 H×W×channels (gray ↔ RGB converted; 16-bit scaled to 8 bit by its dtype range)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.seek(0)   # first frame of animated GIF/TIFF
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
                image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    return array[..., None] if array.ndim == 2 else array


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 H×W×C → uint8 height×width×C, anti-aliased when shrinking (as shards are prepared)."""
    if image.shape[:2] == (height, width):
        return image
    from skimage.transform import resize

    out = resize(image.astype(np.float32), (height, width), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _single_object(run_dir: Path, n_classes: int) -> bool:
    """The run's largest-component setting: its config's postprocess_lcc, else on for one foreground class."""
    setting = (RunDir(run_dir).read_config() or {}).get("postprocess_lcc")
    return bool(setting) if setting is not None else n_classes == 2


def predict_folder(run_dir: Path, images: Path, out: Path, device: str = "auto") -> int:
    """Predict a mask for every image in `images` (a folder, or one file) into `out`/<stem>.png; returns the count.

    Masks are uint8 PNGs of class ids at each input image's own resolution.
    """
    from PIL import Image

    from segbench.postprocess import predict_full

    resolved = resolve_device(device)
    model, meta = load_weights(Path(run_dir), resolved)
    images = Path(images)
    if images.is_file():
        files = [images]
    elif images.is_dir():
        files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise UserError(f"--images {images}: no such file or folder")
    if not files:
        raise UserError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    single_object = _single_object(Path(run_dir), int(meta["n_classes"]))
    written: set[str] = set()
    for path in files:
        image = _read_image(path, int(meta["in_channels"]))
        small = _resize(image, int(meta["height"]), int(meta["width"]))
        logits = next(predict_logits(model, small[None], resolved))
        mask = predict_full(logits, image.shape[:2], single_object)
        # a.png and a.jpg would collide on the stem: the second keeps its full name
        name = f"{path.stem}.png" if path.stem not in written else f"{path.name}.png"
        written.add(path.stem)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buffer, format="PNG")
        atomic_write_bytes(out / name, buffer.getvalue())
    return len(files)
