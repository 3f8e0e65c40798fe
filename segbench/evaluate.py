"""Scoring label maps: per-image rows, summaries, CSV/JSON files, and scoring a folder of predicted masks.

Files written per evaluation:
  per_image.csv  `case`, then the metric columns of `segbench.metrics.case_metrics` in their order; NaN = empty
  summary.json   see `evaluate_predictions`; NaN/inf become null
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_bytes, atomic_write_json
from segbench.metrics import ConfusionMatrix, case_metrics, drop_void, human_object_classes, summarize

MASK_SUFFIXES = (".png", ".gif")
DEFAULT_CLASS_NAMES = ("background", "foreground")

CLASSES_NAME = "classes.json"     # beside predicted masks: {"class_names": [...], "run": RUN, "dataset": ...}


def _spacing_list(spacings: Sequence[Any] | None, case_ids: Sequence[str]) -> list[tuple[float, ...] | None] | None:
    """Validated per-case spacings, or None when spacing is unknown for every case (distances then in pixels)."""
    if spacings is None:
        return None
    if len(spacings) != len(case_ids):
        raise ValueError(f"{len(spacings)} spacings for {len(case_ids)} cases")
    known = [s is not None and bool(np.all(np.isfinite(np.asarray(s, dtype=float)))) for s in spacings]
    if not any(known):
        return None
    if not all(known):
        raise ValueError(f"spacing known for some cases but not for case {case_ids[known.index(False)]!r}; "
                         "mixing mm and pixel distances would make the summary meaningless")
    return [tuple(float(v) for v in np.asarray(s, dtype=float).ravel()) for s in spacings]


def evaluate_predictions(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], case_ids: Sequence[str],
                         spacings: Sequence[Any] | None, class_names: Sequence[str], ignore_void: bool = False,
                         distances: bool = True) -> tuple[list[dict], dict]:
    """Score predicted label maps against ground truth, one image at a time.

    preds, gts: uint8 H×W class ids in [0, len(class_names)), equal shapes per case (evaluation resolution).
    spacings: per-case (row, col) mm, or None (unknown: distances in pixels, `spacing_known: false`).
    ignore_void: predictions on pixels whose ground truth is class 0 count for nothing (`metrics.drop_void`;
    Cityscapes/CamVid convention; summary 'void': 'ignored' | 'counted'; confusion also holds the mIoU by the other
    rule). distances=False skips the distance metrics (hausdorff, hd95, assd: most of the time on large images).

    Returns (rows, summary). rows[i] = {'case': case_ids[i], **case_metrics(...)}. summary = {
      n_cases, class_names, spacing_known, distance_unit ('mm' | 'px'),
      metrics:     summarize(rows)  (per metric mean/std/median/min/max/n/n_undefined),
      n_undefined: {metric: count of NaN rows},
      confusion:   (multi-class only) pixel confusion over all images: iou_per_class {name: IoU incl. class 0},
                   miou (classes 1.., the standard Cityscapes number) and miou_excl_human_object when applicable }.
    ('confusion', not 'dataset': run summaries use 'dataset' for the dataset's name.)
    """
    if not len(preds) == len(gts) == len(case_ids):
        raise ValueError(f"{len(preds)} predictions, {len(gts)} ground truths, {len(case_ids)} case ids")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique (paired statistics match runs by case)")
    class_names = list(class_names)
    spacing_per_case = _spacing_list(spacings, case_ids)
    multi_class = len(class_names) > 2
    confusion = ConfusionMatrix(class_names) if multi_class else None
    rows: list[dict] = []
    # disable=None: a bar on a terminal only (scoring distances of large masks takes a while)
    cases = tqdm(zip(preds, gts, case_ids), total=len(preds), desc="score", unit="case", disable=None, leave=False)
    for i, (pred, gt, case) in enumerate(cases):
        spacing = spacing_per_case[i] if spacing_per_case else None
        try:
            if confusion is not None:   # as predicted: the matrix gives mIoU by either void rule
                confusion.update(pred, gt)
            pred = drop_void(pred, gt) if ignore_void else pred
            rows.append({"case": str(case), **case_metrics(pred, gt, spacing, class_names, distances)})
        except ValueError as exc:
            raise ValueError(f"case {case!r}: {exc}") from None
    metrics = summarize(rows)
    summary: dict[str, Any] = {
        "n_cases": len(rows),
        "class_names": class_names,
        "void": "ignored" if ignore_void else "counted",
        "spacing_known": spacing_per_case is not None,
        "distance_unit": "mm" if spacing_per_case is not None else "px",
        "metrics": metrics,
        "n_undefined": {name: entry["n_undefined"] for name, entry in metrics.items()},
    }
    if confusion is not None:
        ious = confusion.iou_per_class(ignore_void)
        other = "miou_void_counted" if ignore_void else "miou_void_ignored"
        dataset_level = {"iou_per_class": dict(zip(class_names, map(float, ious))),
                         "miou": confusion.miou(ignore_void_gt=ignore_void),
                         other: confusion.miou(ignore_void_gt=not ignore_void)}   # the other rule, for comparison
        excluded = human_object_classes(class_names)
        if excluded is not None:
            dataset_level["miou_excl_human_object"] = confusion.miou(exclude=sorted(excluded),
                                                                     ignore_void_gt=ignore_void)
        summary["confusion"] = dataset_level
    return rows, summary


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    return "" if math.isnan(value) else repr(value)   # repr round-trips floats exactly


def write_per_image_csv(rows: Sequence[dict], path: Path) -> None:
    """Write rows as CSV (atomically): `case` first, then every other key in first-seen order; NaN → ''."""
    columns = ["case"]
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name, float("nan"))) for name in columns])
    atomic_write_bytes(Path(path), buffer.getvalue().encode())


def read_per_image_csv(path: Path) -> list[dict]:
    """Inverse of `write_per_image_csv`: [{'case': str, metric: float (NaN for empty cells), ...}, ...]."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            table = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read per-image CSV ({exc})") from None
    if "case" not in columns:
        raise UserError(f"{path}: not a per-image CSV (no 'case' column)")
    rows = []
    for line, record in enumerate(table, start=2):
        row: dict[str, Any] = {"case": record["case"]}
        for name in columns:
            if name == "case":
                continue
            cell = (record.get(name) or "").strip()
            try:
                row[name] = float(cell) if cell else float("nan")
            except ValueError:
                raise UserError(f"{path}:{line}: column {name!r} holds {cell!r}, not a number") from None
        rows.append(row)
    return rows


def to_json_safe(obj: Any) -> Any:
    """Plain-JSON copy: NaN/±inf → None, numpy scalars/arrays → Python numbers/lists, tuples → lists."""
    if isinstance(obj, dict):
        return {str(key): to_json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_json_safe(value) for value in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_summary(summary: dict, path: Path) -> None:
    """Write the summary as JSON atomically; NaN/inf become null (strict JSON has no NaN)."""
    atomic_write_json(Path(path), to_json_safe(summary))


def parse_spacing(text: str | None) -> tuple[float, float] | None:
    """--spacing: 'S' (square pixels) or 'ROW,COL' in mm → (row, col); None/'' → None (distances in pixels)."""
    if text is None or not text.strip():
        return None
    try:
        values = [float(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--spacing {text!r}: expected one positive number or ROW,COL in mm (e.g. 0.35,0.35)")
    return values[0], values[1]


def _mask_files(directory: Path, role: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise UserError(f"{directory}: {role} folder does not exist")
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in MASK_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in files:
            raise UserError(f"{path}: two {role} masks share the stem {path.stem!r} ({files[path.stem].name})")
        files[path.stem] = path
    return files


def read_mask(path: Path, n_classes: int) -> np.ndarray:
    """A PNG/GIF mask → uint8 H×W class ids in [0, n_classes); UserError naming the file otherwise.

    Read by pairgen's one label reader (`pairgen.core.images.read_label_image`, as `pairgen prepare` reads
    masks: palette images through their colours, grey values as ids); a mask holding only 0 and 255 is binary and
    read as 0/1.
    """
    from pairgen.core.images import read_label_image

    values = read_label_image(path)
    if n_classes <= 255 and np.isin(values, (0, 255)).all():
        values = values // 255                 # 0/255 binary mask
    if values.size and values.max() >= n_classes:
        raise UserError(f"{path}: label value {int(values.max())} outside the {n_classes} classes (0..{n_classes - 1})")
    return values


METRIC_SETS = ("all", "overlap")   # overlap: dice, iou, mIoU only (no distance transforms)


def _prediction_facts(pred_dir: Path) -> dict[str, Any]:
    """pred_dir/classes.json as `segbench predict` writes it ({} when absent); UserError when malformed."""
    import json


    path = pred_dir / CLASSES_NAME
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    names = facts.get("class_names") if isinstance(facts, dict) else None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: expected {{\"class_names\": [background, ...]}} with at least two names")
    return facts


def evaluate_folders(pred_dir: Path, gt_dir: Path, spacing_mm: tuple[float, float] | None,
                     class_names: list[str] | None, out: Path, metrics: str = "all", void: str = "auto") -> dict:
    """Score every predicted mask in `pred_dir` against the mask with the same file stem in `gt_dir`.

    Masks are PNG or GIF label maps (see `read_mask`); class_names default to those `segbench predict` recorded
    in pred_dir/classes.json, else background/foreground; one spacing (row, col) mm for all cases, or None for
    pixel distances. Every stem must be present in both folders (scoring a subset silently would bias the
    benchmark). metrics: 'all' or 'overlap' (no distances). void: 'ignore' | 'count' | 'auto' (ignore for the
    Cityscapes/CamVid runs classes.json names, else count). Writes out/per_image.csv and out/summary.json and
    returns the summary (`evaluate_predictions` plus pred_dir and gt_dir).
    """
    from segbench.metrics import VOID_RULES, ignores_void

    pred_dir, gt_dir, out = Path(pred_dir), Path(gt_dir), Path(out)
    if metrics not in METRIC_SETS:
        raise UserError(f"--metrics must be one of {', '.join(METRIC_SETS)}, not {metrics!r}")
    if void not in VOID_RULES:
        raise UserError(f"--void must be one of {', '.join(VOID_RULES)}, not {void!r}")
    facts = _prediction_facts(pred_dir) if pred_dir.is_dir() else {}
    class_names = list(class_names or facts.get("class_names") or DEFAULT_CLASS_NAMES)
    if len(class_names) < 2:
        raise UserError(f"need at least two class names (background first), got {class_names}")
    if spacing_mm is not None and (len(spacing_mm) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing_mm)):
        raise UserError(f"--spacing must be two positive numbers (row, col) in mm, got {spacing_mm}")
    preds, gts = _mask_files(pred_dir, "prediction"), _mask_files(gt_dir, "ground-truth")
    matched = sorted(set(preds) & set(gts))
    only_pred, only_gt = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if not matched or only_pred or only_gt:
        def few(names: list[str]) -> str:
            return ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "") or "none"
        raise UserError(f"{pred_dir} vs {gt_dir}: {len(matched)} matching mask stems; without ground truth: "
                        f"{few(only_pred)}; without prediction: {few(only_gt)}")
    pred_masks, gt_masks = [], []
    for stem in matched:
        pred, gt = read_mask(preds[stem], len(class_names)), read_mask(gts[stem], len(class_names))
        if pred.shape != gt.shape:
            raise UserError(f"{preds[stem]}: size {pred.shape[1]}×{pred.shape[0]} (W×H) but ground truth "
                            f"{gts[stem]} is {gt.shape[1]}×{gt.shape[0]}")
        pred_masks.append(pred)
        gt_masks.append(gt)
    spacings = None if spacing_mm is None else [tuple(spacing_mm)] * len(matched)
    rows, summary = evaluate_predictions(pred_masks, gt_masks, matched, spacings, class_names,
                                         ignore_void=ignores_void(facts.get("dataset"), void),
                                         distances=metrics == "all")
    summary = {**summary, "pred_dir": str(pred_dir), "gt_dir": str(gt_dir)}
    out.mkdir(parents=True, exist_ok=True)
    write_per_image_csv(rows, out / "per_image.csv")
    write_summary(summary, out / "summary.json")
    return summary
