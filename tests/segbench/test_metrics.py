"""Metrics: hand-computed tiny cases, documented conventions, and agreement with SimpleITK / scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist
from skimage.metrics import hausdorff_distance

from segbench import metrics as M

CITYSCAPES = ["void", "flat", "construction", "object", "nature", "sky", "human", "vehicle"]
SPACINGS = [(1.0, 1.0), (0.35, 0.7), (2.0, 0.5)]


def square(shape=(5, 6), rows=slice(1, 4), cols=slice(1, 4)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_dice_iou_hand_case():
    pred = np.array([[1, 1, 0, 0]], bool)
    gt = np.array([[0, 1, 1, 1]], bool)
    assert M.dice(pred, gt) == pytest.approx(2 * 1 / (2 + 3))
    assert M.iou(pred, gt) == pytest.approx(1 / 4)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        M.dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_surface_is_face_boundary_including_image_edge():
    assert M.surface(square()).sum() == 8                    # 3×3 square: centre is interior
    full = np.ones((4, 5), bool)
    assert M.surface(full).sum() == 4 * 5 - 2 * 3            # whole image: its edge pixels


def test_single_pixels_three_apart_with_anisotropic_spacing():
    pred, gt = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    pred[1, 2], gt[4, 2] = True, True                       # 3 rows apart
    for fn in (M.hausdorff, M.hd95, M.assd):
        assert fn(pred, gt, (0.35, 0.7)) == pytest.approx(3 * 0.35)
    pred[1, 2], pred[4, 5] = False, True                    # now 3 columns apart
    assert M.hausdorff(pred, gt, (0.35, 0.7)) == pytest.approx(3 * 0.7)
    assert M.hausdorff(pred, gt, None) == pytest.approx(3.0)


def test_shifted_square_hand_case():
    gt, pred = square(cols=slice(1, 4)), square(cols=slice(2, 5))
    d_pred, d_gt = M.surface_distances(pred, gt)
    assert sorted(d_pred) == [0, 0, 0, 0, 1, 1, 1, 1] and sorted(d_gt) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert M.dice(pred, gt) == pytest.approx(2 / 3) and M.iou(pred, gt) == pytest.approx(0.5)
    assert M.hausdorff(pred, gt) == 1.0 and M.hd95(pred, gt) == 1.0 and M.assd(pred, gt) == 0.5


def test_hd95_is_max_of_directed_percentiles_and_assd_pools_surfaces():
    gt = np.zeros((3, 21), bool)
    gt[1, :] = True                                          # 21-px line, all surface
    pred = np.zeros_like(gt)
    pred[1, 0] = True                                        # one end of it
    spacing = (0.35, 0.7)
    # directed: pred→gt = [0]; gt→pred = [0, 1, …, 20] columns → P95 (linear) = 19 columns
    assert M.hd95(pred, gt, spacing) == pytest.approx(19 * 0.7)
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(20 * 0.7)
    assert M.assd(pred, gt, spacing) == pytest.approx(sum(range(21)) * 0.7 / 22)
    pooled = np.percentile(np.r_[0.0, np.arange(21)], 95) * 0.7          # medpy's convention
    assert M.hd95(pred, gt, spacing) > pooled


def test_empty_conventions():
    empty, blob = np.zeros((4, 4), bool), square((4, 4), slice(1, 3), slice(1, 3))
    assert M.dice(empty, empty) == 1.0 and M.iou(empty, empty) == 1.0
    assert M.hausdorff(empty, empty) == 0.0 and M.hd95(empty, empty) == 0.0 and M.assd(empty, empty) == 0.0
    for pred, gt in ((empty, blob), (blob, empty)):
        assert M.dice(pred, gt) == 0.0 and M.iou(pred, gt) == 0.0
        assert all(math.isnan(fn(pred, gt, (0.35, 0.7))) for fn in (M.hausdorff, M.hd95, M.assd))
    d_pred, d_gt = M.surface_distances(blob, empty)
    assert d_pred.size == 4 and np.isnan(d_pred).all() and d_gt.size == 0


def test_bad_spacing_raises():
    with pytest.raises(ValueError, match="spacing"):
        M.hausdorff(square(), square(), (1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        M.hausdorff(square(), square(), (1.0,))


def random_shape(rng: np.random.Generator, shape=(40, 52)) -> np.ndarray:
    """A few smooth random blobs (with holes and several components now and then)."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=rng.uniform(2.5, 4.0))
    return field > np.quantile(field, rng.uniform(0.55, 0.85))


def sitk_image(mask: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((float(spacing[1]), float(spacing[0])))          # SimpleITK is (x=col, y=row)
    return image


def sitk_contour(mask: np.ndarray) -> np.ndarray:
    """SimpleITK's face-connected contour; padding makes pixels on the image edge count as boundary."""
    padded = sitk.GetImageFromArray(np.pad(mask, 1).astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.LabelContour(padded, fullyConnected=False))[1:-1, 1:-1].astype(bool)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_simpleitk_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred, gt = random_shape(rng), random_shape(rng)
    spacing = SPACINGS[seed % len(SPACINGS)]
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk_image(gt, spacing), sitk_image(pred, spacing))
    assert M.dice(pred, gt) == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert M.iou(pred, gt) == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)

    contour_pred, contour_gt = sitk_contour(pred), sitk_contour(gt)
    np.testing.assert_array_equal(M.surface(pred), contour_pred)
    np.testing.assert_array_equal(M.surface(gt), contour_gt)

    hausdorff_filter = sitk.HausdorffDistanceImageFilter()
    hausdorff_filter.Execute(sitk_image(contour_pred, spacing), sitk_image(contour_gt, spacing))
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(hausdorff_filter.GetHausdorffDistance(), rel=1e-6)

    points_pred = np.argwhere(contour_pred) * np.asarray(spacing)
    points_gt = np.argwhere(contour_gt) * np.asarray(spacing)
    pairwise = cdist(points_pred, points_gt)
    d_pred, d_gt = pairwise.min(axis=1), pairwise.min(axis=0)
    assert M.hd95(pred, gt, spacing) == pytest.approx(max(np.percentile(d_pred, 95), np.percentile(d_gt, 95)))
    assert M.assd(pred, gt, spacing) == pytest.approx((d_pred.sum() + d_gt.sum()) / (d_pred.size + d_gt.size))


@pytest.mark.parametrize("seed", range(3))
def test_hausdorff_matches_skimage_on_surfaces(seed):
    rng = np.random.default_rng(100 + seed)
    pred, gt = random_shape(rng), random_shape(rng)
    assert M.hausdorff(pred, gt) == pytest.approx(hausdorff_distance(M.surface(pred), M.surface(gt)))


def test_disjoint_convex_shapes_match_full_set_hausdorff():
    # worst-case points lie outside the other mask, so surface HD = HD of all foreground pixels
    rows, cols = np.mgrid[:30, :40]
    pred = (rows - 8) ** 2 + (cols - 9) ** 2 <= 25
    gt = (rows - 20) ** 2 + (cols - 28) ** 2 <= 36
    assert M.hausdorff(pred, gt) == pytest.approx(hausdorff_distance(pred, gt))
    full_set = sitk.HausdorffDistanceImageFilter()
    full_set.Execute(sitk_image(pred, (0.35, 0.7)), sitk_image(gt, (0.35, 0.7)))
    assert M.hausdorff(pred, gt, (0.35, 0.7)) == pytest.approx(full_set.GetHausdorffDistance(), rel=1e-6)


def test_case_metrics_binary_keys_and_values():
    gt = square(cols=slice(1, 4)).astype(np.uint8)
    pred = square(cols=slice(2, 5)).astype(np.uint8)
    row = M.case_metrics(pred, gt, (0.5, 0.5), ["background", "left lung"])
    assert list(row) == ["dice", "iou", "hausdorff_mm", "hd95_mm", "assd_mm"]
    assert row["dice"] == pytest.approx(2 / 3) and row["hausdorff_mm"] == 0.5 and row["assd_mm"] == 0.25


def test_case_metrics_multiclass_cityscapes():
    gt = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 2],
                   [6, 0, 7, 7],
                   [0, 0, 7, 7]], np.uint8)
    pred = np.array([[1, 1, 2, 2],
                     [1, 1, 2, 7],
                     [0, 0, 7, 7],
                     [3, 0, 7, 7]], np.uint8)
    row = M.case_metrics(pred, gt, None, CITYSCAPES)
    assert list(row)[:5] == ["dice_flat", "iou_flat", "hausdorff_mm_flat", "hd95_mm_flat", "assd_mm_flat"]
    assert list(row)[-2:] == ["miou", "miou_excl_human_object"] and len(row) == 7 * 5 + 2
    expected_iou = {"flat": 1.0, "construction": 3 / 4, "object": 0.0, "human": 0.0, "vehicle": 4 / 5}
    for name, value in expected_iou.items():
        assert row[f"iou_{name}"] == pytest.approx(value)
    assert math.isnan(row["iou_nature"]) and math.isnan(row["dice_sky"])    # absent from both
    assert math.isnan(row["hausdorff_mm_object"])                             # predicted only
    assert row["miou"] == pytest.approx(np.mean(list(expected_iou.values())))
    assert row["miou_excl_human_object"] == pytest.approx(np.mean([1.0, 3 / 4, 4 / 5]))


def test_case_metrics_suffix_and_label_checks():
    names = ["background", "left lung", "right lung"]
    row = M.case_metrics(np.array([[1, 2]], np.uint8), np.array([[1, 2]], np.uint8), None, names)
    assert "dice_left_lung" in row and "miou" in row and "miou_excl_human_object" not in row
    with pytest.raises(ValueError, match="label 3"):
        M.case_metrics(np.array([[3]], np.uint8), np.array([[0]], np.uint8), None, names)


def test_confusion_matrix_dataset_level():
    cm = M.ConfusionMatrix(["void", "road", "car"])
    cm.update(np.array([[1, 1], [2, 0]], np.uint8), np.array([[1, 2], [2, 2]], np.uint8))
    cm.update(np.array([[1, 2]], np.uint8), np.array([[0, 2]], np.uint8))
    np.testing.assert_array_equal(cm.matrix, [[0, 1, 0], [0, 1, 0], [1, 1, 2]])
    # road: TP 1, FP 2 (one from a void pixel), FN 0; car: TP 2, FP 0, FN 2
    np.testing.assert_allclose(cm.iou_per_class(), [0.0, 1 / 3, 2 / 4])
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert cm.miou(exclude=["car"]) == pytest.approx(1 / 3)
    assert cm.iou_per_class(ignore_void_gt=True)[1] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="unknown class"):
        cm.miou(exclude=["bus"])


def test_summarize_counts_undefined_and_uses_sample_std():
    rows = [{"case": "a", "dice": 0.5, "hd": 1.0}, {"case": "b", "dice": 0.7, "hd": float("nan")},
            {"case": "c", "dice": 0.9, "hd": 3.0}]
    summary = M.summarize(rows)
    assert list(summary) == ["dice", "hd"]
    assert summary["dice"]["mean"] == pytest.approx(0.7) and summary["dice"]["median"] == pytest.approx(0.7)
    assert summary["dice"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert summary["hd"]["n"] == 2 and summary["hd"]["n_undefined"] == 1 and summary["hd"]["mean"] == 2.0
    single = M.summarize([{"x": 1.0}])["x"]
    assert single["mean"] == 1.0 and math.isnan(single["std"])
    assert math.isnan(M.summarize([{"x": float("nan")}])["x"]["mean"])
