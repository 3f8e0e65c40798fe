"""Inference: a trained run's network on shard arrays (test evaluation) or on any folder of images.

`segbench predict --run RUN --images DIR --out DIR [--like GT_DIR]` writes one PNG per input image, at the input's
own resolution (or, with --like, at the size of the ground-truth mask with the same stem in GT_DIR: the grid the
run was scored at, e.g. SCR's 1024² masks for 512² images), holding CLASS IDS (0 = background, 1 = first foreground
class, …) — not 0/255 — so the files feed `segbench evaluate` and other tools unchanged (a binary mask looks black
in an image viewer; scale it for display).
Pipeline per image: read as the run's dataset adapter reads its cases (input_reader: SCR's PNG polarity, JSRT
.IMG; the generic pairgen.core.images reader otherwise) and resized exactly as `pairgen prepare` does (PIL box
filter to the training resolution) → [-1, 1] → U-Net → bicubic upsampling of the logits to the output size →
labels → largest connected component for single-object tasks (thesis section 4.2).
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
from segbench.evaluate import CLASSES_NAME
from segbench.mixing import uint8_to_model
from segbench.presets import SegConfig
from segbench.rundir import RunDir
from segbench.step import autocast_for
from segbench.unet import UNet, n_outputs_for


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
        _check_meta(meta)
        model = UNet(meta["in_channels"], n_outputs_for(meta["n_classes"]), meta["depth"], meta["filters"],
                     meta["pooling"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:   # not a dict, missing keys, shape mismatch: all mean "not a usable weights.pt"
        raise UserError(f"{path}: not a segbench weights file ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return model.to(device).eval(), meta


def _check_meta(meta: dict[str, Any]) -> None:
    """ValueError unless weights.pt's meta can rebuild a network and size its inputs (before anything is built)."""
    from pairgen.core.limits import MAX_SIDE

    ranges = {"in_channels": (1, 3), "n_classes": (2, 256), "depth": (1, 8), "filters": (1, 4096),
              "height": (1, MAX_SIDE), "width": (1, MAX_SIDE)}
    for key, (low, high) in ranges.items():
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"meta {key}={value!r} outside {low}..{high}")
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) != meta["n_classes"] or not all(isinstance(n, str) for n in names):
        raise ValueError(f"meta class_names {names!r} do not name the {meta['n_classes']} classes")


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
    # one image per forward pass, as `segbench predict` does: which images share a batch changes the float
    # rounding (~1e-6 on CPU), enough to flip a near-tie pixel, and predict must reproduce these metrics exactly
    logits_per_case = tqdm(predict_logits(model, test.images, device, 1, config.amp),
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
    with the whole-split confusion numbers as 'confusion', postprocess_lcc and evaluated_at. Void ground truth is
    ignored for the datasets of `metrics.VOID_DATASETS` (Cityscapes, CamVid)."""
    from segbench.evaluate import evaluate_predictions
    from segbench.metrics import ignores_void

    spacings = None
    if test.full_masks is not None and test.spacing_mm is not None:
        # shards store spacing as float32 (0.35 → 0.349999994…): score at the decimal it stands for (float32's
        # shortest repr), as `segbench evaluate --spacing 0.35` does, so both agree to the last digit
        spacings = [tuple(float(np.format_float_positional(v)) for v in s) for s in test.spacing_mm]
    rows, summary = evaluate_predictions(preds, ground_truth(test), case_ids(test), spacings, test.class_names,
                                         ignore_void=ignores_void(test.attrs.get("dataset")))
    if isinstance(summary.get("dataset"), dict):   # whole-dataset confusion numbers; 'dataset' names the dataset
        summary["confusion"] = summary.pop("dataset")
    summary.update(postprocess_lcc=bool(single_object),
                   evaluated_at="full" if test.full_masks is not None else "training")
    return rows, summary


def _run_setting(run_dir: Path, key: str) -> Any:
    """A field of the run's config.json, None when absent or unreadable."""
    return (RunDir(run_dir).read_config() or {}).get(key)


def _single_object(run_dir: Path, n_classes: int) -> bool:
    """The run's largest-component setting: its config's postprocess_lcc, else on for one foreground class."""
    setting = _run_setting(run_dir, "postprocess_lcc")
    return bool(setting) if setting is not None else n_classes == 2


def _input_files(images: Path, out: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The images to predict (a folder's files with `suffixes`), refusing before any work: an --out that holds
    them (its masks would overwrite them) and inputs whose masks would share a name (b.gif and b.jpg both → b.png)."""
    if images.is_file():
        files = [images]
    elif images.is_dir():
        files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    else:
        raise UserError(f"--images {images}: no such file or folder")
    if not files:
        raise UserError(f"--images {images}: no images ({', '.join(suffixes)})")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(p.parent.resolve() == out.resolve() for p in files):
        raise UserError(f"--out {out}: holds the input images; choose another folder (masks would overwrite them)")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise UserError(f"--images {images}: {stems[path.stem].name} and {path.name} would both be written as "
                            f"{path.stem}.png; rename one")
        stems[path.stem] = path
    return files


def _like_shapes(files: list[Path], like: Path) -> dict[str, tuple[int, int]]:
    """Input stem → (rows, cols) of the mask with that stem in `like` (header only); UserError before any work
    when the folder is missing or lacks a stem."""
    from pairgen.core.images import header_shape
    from segbench.evaluate import MASK_SUFFIXES, _mask_files

    masks = _mask_files(like, "--like")   # the very files `segbench evaluate --gt` would match
    missing = [p.stem for p in files if p.stem not in masks]
    if missing:
        raise UserError(f"--like {like}: no mask ({', '.join(MASK_SUFFIXES)}) for {', '.join(missing[:5])}"
                        + (f" … ({len(missing)} in all)" if len(missing) > 5 else ""))
    return {p.stem: header_shape(masks[p.stem]) for p in files}


def predict_folder(run_dir: Path, images: Path, out: Path, device: str = "auto", like: Path | None = None) -> int:
    """Predict a mask for every image in `images` (a folder, or one file) into `out`/<stem>.png; returns the count.

    Masks are uint8 PNGs of class ids at each input image's own resolution, or at the size of the mask with the
    same stem in `like` (the ground truth the run scores at); `out`/classes.json records the run's class names
    (which `segbench evaluate` reads). Images are read by the run's dataset adapter (config.json 'dataset';
    input_reader) and resized exactly as `pairgen prepare` does, so a run's own test images give the masks the run
    was scored with.
    """
    from PIL import Image

    from pairgen.core.files import atomic_write_json
    from pairgen.core.images import resize_image
    from pairgen.datasets.registry import input_adapter
    from segbench.postprocess import predict_full

    images, out = Path(images), Path(out)
    resolved = resolve_device(device)
    model, meta = load_weights(Path(run_dir), resolved)
    dataset = _run_setting(Path(run_dir), "dataset")
    adapter = input_adapter(dataset if isinstance(dataset, str) else None)
    files = _input_files(images, out, adapter.input_suffixes)
    shapes = _like_shapes(files, Path(like)) if like is not None else {}
    read = adapter.input_reader(files, int(meta["in_channels"]))
    out.mkdir(parents=True, exist_ok=True)
    single_object = _single_object(Path(run_dir), int(meta["n_classes"]))
    amp = _run_setting(Path(run_dir), "amp") is not False   # as the run's own test evaluation
    for path in files:
        image = read(path)
        small = resize_image(image, int(meta["height"]), int(meta["width"]))
        logits = next(predict_logits(model, small[None], resolved, amp=amp))
        mask = predict_full(logits, shapes.get(path.stem, image.shape[:2]), single_object)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buffer, format="PNG")
        atomic_write_bytes(out / f"{path.stem}.png", buffer.getvalue())
    atomic_write_json(out / CLASSES_NAME, {"class_names": list(meta["class_names"]), "run": str(run_dir),
                                           "dataset": _run_setting(Path(run_dir), "dataset")})
    return len(files)
