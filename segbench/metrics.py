"""Segmentation metrics: overlap (Dice, IoU), surface distances (Hausdorff, HD95, ASSD), mIoU, summaries.

Conventions (fixed here so that every table in the benchmark means the same thing):

* Inputs are boolean masks of equal shape (2-D H×W; any N-D works), or uint8 class-id maps for
  `case_metrics` / `ConfusionMatrix`. Distances are in millimetres: `spacing_mm` gives the physical size of one
  pixel along each axis, (row, col) in 2-D; `None` means 1.0 per axis (then the numbers are pixels).
* Surface = boundary pixels: foreground pixels with at least one 4-connected (face) background neighbour,
  pixels outside the image counting as background (`mask & ~binary_erosion(mask)` with a cross structure,
  as MONAI's `get_mask_edges` and medpy do). The resulting contour is 8-connected and one pixel thick. It is
  what `SimpleITK.LabelContour(fullyConnected=False)` returns on a zero-padded image.
* Surface distances are measured between pixel centres with an exact Euclidean distance transform that honours
  anisotropic spacing (`scipy.ndimage.distance_transform_edt(..., sampling=spacing)`).
* Hausdorff = max of the two directed maxima (thesis eq. 4.3), computed on surfaces. It can differ from the
  Hausdorff distance of the full pixel sets (skimage / SimpleITK on raw masks) when the masks overlap or nest:
  a surface pixel deep inside the other mask is far from that mask's surface but at distance 0 from its pixels.
  For disjoint compact shapes (e.g. two discs) the two coincide; the tests check both on their own ground.
* HD95 = max(P95(d pred→gt), P95(d gt→pred)), each percentile with numpy's default linear interpolation
  (MONAI `compute_hausdorff_distance(percentile=95)`; medpy's `hd95` instead takes one percentile of the pooled
  distances, which is usually a little smaller).
* ASSD = (Σ d pred→gt + Σ d gt→pred) / (|S_pred| + |S_gt|), the mean over all surface pixels of both masks
  (MONAI symmetric ASD, Heimann et al. 2009; medpy averages the two directed means instead).
* Undefined cases: both masks empty → Dice = IoU = 1.0 and every distance 0.0 (a correct "nothing here").
  Exactly one empty → Dice = IoU = 0.0 and every distance NaN (there is no surface to measure to). NaN is never
  averaged: `summarize` drops it and reports how many there were (`n_undefined`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

EXCLUDED_FROM_MIOU_EXCL = ("human", "object")   # thesis table 5.4: "mIoU excluding 'Human' and 'Object'"


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P|+|G|) in [0, 1] for boolean masks of equal shape; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU (Jaccard) = |P∩G| / |P∪G| in [0, 1] for boolean masks of equal shape; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = int(np.logical_or(pred, gt).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, gt).sum()) / union


def _spacing(spacing_mm: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing_mm is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be {ndim} positive numbers, got {spacing_mm}")
    return spacing


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (bool, same shape): foreground with a face-adjacent background pixel.

    `border_value=0` in the erosion makes pixels on the image edge part of the surface, so a mask that fills
    the whole image still has one.
    """
    mask = np.asarray(mask, dtype=bool)
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing_mm: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float64 1-D) from each surface pixel of one mask to the nearest surface pixel of the other.

    Returns (d_pred_to_gt with one entry per surface pixel of `pred`, d_gt_to_pred likewise for `gt`), in
    raster order. Both empty → two empty arrays; exactly one empty → the non-empty side is all NaN (no surface
    to measure to) and the other side empty.
    """
    pred, gt = _pair(pred, gt)
    spacing = _spacing(spacing_mm, pred.ndim)
    pred_surface, gt_surface = surface(pred), surface(gt)
    if not pred_surface.any() or not gt_surface.any():
        # distance_transform_edt of an image without zeros is meaningless; say "undefined" explicitly
        return (np.full(int(pred_surface.sum()), np.nan), np.full(int(gt_surface.sum()), np.nan))
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_gt[pred_surface].astype(np.float64), to_pred[gt_surface].astype(np.float64)


def _distance_stat(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | None, kind: str) -> float:
    d_pred, d_gt = surface_distances(pred, gt, spacing_mm)
    if d_pred.size == 0 and d_gt.size == 0:
        return 0.0                      # both empty: perfect agreement on "nothing"
    if d_pred.size == 0 or d_gt.size == 0:
        return float("nan")             # exactly one empty: undefined
    if kind == "max":
        return float(max(d_pred.max(), d_gt.max()))
    if kind == "p95":
        return float(max(np.percentile(d_pred, 95), np.percentile(d_gt, 95)))
    return float((d_pred.sum() + d_gt.sum()) / (d_pred.size + d_gt.size))


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """Symmetric Hausdorff distance between the surfaces (mm, >= 0); 0.0 both empty, NaN exactly one empty."""
    return _distance_stat(pred, gt, spacing_mm, "max")


def hd95(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """max of the two directed 95th percentiles of surface distances (mm, MONAI convention); see module doc."""
    return _distance_stat(pred, gt, spacing_mm, "p95")


def assd(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance (mm): mean over the surface pixels of both masks; see module doc."""
    return _distance_stat(pred, gt, spacing_mm, "mean")


def metric_suffix(class_name: str) -> str:
    """Class name as used in metric keys: spaces → '_' (e.g. 'left lung' → 'left_lung')."""
    return class_name.strip().replace(" ", "_")


def human_object_classes(class_names: Sequence[str]) -> set[int] | None:
    """Indices of 'human' and 'object' (case-insensitive) when both are present, else None."""
    lowered = [name.lower() for name in class_names]
    if all(name in lowered for name in EXCLUDED_FROM_MIOU_EXCL):
        return {lowered.index(name) for name in EXCLUDED_FROM_MIOU_EXCL}
    return None


def _check_labels(labels: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"{what} holds label {int(bad)}, but there are only {n_classes} classes")
    return labels


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | None,
                 class_names: Sequence[str], distances: bool = True) -> dict[str, float]:
    """Metrics of one image: `pred`, `gt` are uint8 H×W class ids in [0, len(class_names)); class 0 is background.

    One foreground class (len(class_names) == 2): keys dice, iou, hausdorff_mm, hd95_mm, assd_mm.
    Several: dice_<c>, iou_<c>, hausdorff_mm_<c>, hd95_mm_<c>, assd_mm_<c> for every foreground class c (in class
    order, spaces → '_'), then `miou` and, when the classes include 'human' and 'object', `miou_excl_human_object`.

    Multi-class rows: a class absent from both pred and gt gets NaN for all five of its metrics (nothing to score;
    nnU-Net does the same), and `miou` is the mean IoU over the foreground classes present in gt or pred
    (NaN when there is none). Class 0 (background / Cityscapes 'void') never enters mIoU, as in the Cityscapes
    benchmark, although the networks are trained with it as one of their channels (thesis: 8 channels incl. void).
    Spacing None → distances in pixels; the keys keep their _mm names and the summary records spacing_known.
    distances=False: dice and iou (and mIoU) only.
    """
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(f"need a background and at least one foreground class, got {list(class_names)}")
    pred = _check_labels(pred, n_classes, "prediction")
    gt = _check_labels(gt, n_classes, "ground truth")
    _pair(pred, gt)
    row: dict[str, float] = {}
    ious: dict[int, float] = {}
    for c in range(1, n_classes):
        pred_c, gt_c = pred == c, gt == c
        suffix = "" if n_classes == 2 else "_" + metric_suffix(class_names[c])
        if n_classes > 2 and not pred_c.any() and not gt_c.any():
            values = dict.fromkeys(("dice", "iou", "hausdorff_mm", "hd95_mm", "assd_mm")[:5 if distances else 2],
                                   float("nan"))
        else:
            values = {"dice": dice(pred_c, gt_c), "iou": iou(pred_c, gt_c)}
            if distances:
                values.update(hausdorff_mm=hausdorff(pred_c, gt_c, spacing_mm), hd95_mm=hd95(pred_c, gt_c, spacing_mm),
                              assd_mm=assd(pred_c, gt_c, spacing_mm))
            ious[c] = values["iou"]
        row.update({name + suffix: value for name, value in values.items()})
    if n_classes > 2:
        row["miou"] = float(np.mean(list(ious.values()))) if ious else float("nan")
        excluded = human_object_classes(class_names)
        if excluded is not None:
            kept = [value for c, value in ious.items() if c not in excluded]
            row["miou_excl_human_object"] = float(np.mean(kept)) if kept else float("nan")
    return row


# Road-scene benchmarks (Cityscapes, CamVid) score only pixels with a known label: a prediction on a pixel whose
# ground truth is void (class 0) is neither right nor wrong. The other datasets' class 0 is a real background.
VOID_DATASETS = ("cityscapes", "camvid")
VOID_RULES = ("auto", "ignore", "count")


def ignores_void(dataset: str | None, rule: str = "auto") -> bool:
    """Whether void ground truth is ignored: rule 'ignore' / 'count', or 'auto' = by dataset (VOID_DATASETS)."""
    if rule not in VOID_RULES:
        raise ValueError(f"void rule must be one of {VOID_RULES}, not {rule!r}")
    return rule == "ignore" or (rule == "auto" and str(dataset) in VOID_DATASETS)


def drop_void(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """`pred` with class 0 wherever `gt` is void (class 0): those pixels then count for no class (uint8 H×W)."""
    return np.where(gt == 0, np.uint8(0), pred).astype(pred.dtype, copy=False)


class ConfusionMatrix:
    """Pixel confusion matrix over a whole test set: `matrix[gt, pred]` counts (int64, K×K).

    Dataset-level IoU per class = TP / (TP + FP + FN) from the summed counts; this is the standard Cityscapes
    number (large images weigh more), unlike the mean of per-image IoUs in `case_metrics`.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.matrix = np.zeros((len(self.class_names),) * 2, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: uint8 class-id maps of equal shape with values in [0, K)."""
        n = len(self.class_names)
        pred = _check_labels(pred, n, "prediction").astype(np.int64).ravel()
        gt = _check_labels(gt, n, "ground truth").astype(np.int64).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def iou_per_class(self, ignore_void_gt: bool = False) -> np.ndarray:
        """float64 (K,) IoU per class in [0, 1]; NaN for a class absent from both gt and predictions.

        By default a pixel whose gt is class 0 and whose prediction is c counts as a false positive of c (the
        networks here predict class 0 as a class). `ignore_void_gt=True` drops gt-class-0 pixels entirely, as the
        official Cityscapes script does for void pixels; class 0's own IoU is then NaN.
        """
        matrix = self.matrix.astype(np.float64)
        if ignore_void_gt:
            matrix[0, :] = 0.0
        tp = np.diag(matrix)
        union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)

    def miou(self, exclude: Iterable[str | int] = (), ignore_void_gt: bool = False) -> float:
        """Mean IoU over classes 1..K-1 minus `exclude` (names, case-insensitive, or indices); NaN classes skipped.

        `miou(exclude=("human", "object"))` is the thesis's "mIoU excluding 'Human' and 'Object'".
        """
        lowered = [name.lower() for name in self.class_names]
        dropped = {0}
        for item in exclude:
            if isinstance(item, str):
                if item.lower() not in lowered:
                    raise ValueError(f"cannot exclude unknown class {item!r}; classes are {self.class_names}")
                dropped.add(lowered.index(item.lower()))
            else:
                dropped.add(int(item))
        ious = self.iou_per_class(ignore_void_gt)
        kept = [ious[c] for c in range(len(ious)) if c not in dropped and np.isfinite(ious[c])]
        return float(np.mean(kept)) if kept else float("nan")


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict]:
    """Per metric over images: {mean, std, median, min, max, n, n_undefined}.

    Every key holding numbers is summarised ('case' and other strings are skipped), in first-seen order.
    NaN / ±inf values are undefined: excluded from every statistic and counted in n_undefined (n counts the
    rest). std is the sample standard deviation (ddof=1) over images, the spread the thesis reports as
    "± stddev"; it is NaN when n < 2, as are all statistics when n == 0.
    """
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in names and not isinstance(v, str)]
    summary: dict[str, dict] = {}
    for name in names:
        values = np.array([float(row.get(name, np.nan)) for row in rows], dtype=np.float64)
        defined = values[np.isfinite(values)]
        n = int(defined.size)
        nan = float("nan")
        summary[name] = {
            "mean": float(defined.mean()) if n else nan,
            "std": float(defined.std(ddof=1)) if n > 1 else nan,
            "median": float(np.median(defined)) if n else nan,
            "min": float(defined.min()) if n else nan,
            "max": float(defined.max()) if n else nan,
            "n": n,
            "n_undefined": int(values.size - n),
        }
    return summary
