"""B-spline elastic deformation: torch field vs ITK's BSplineTransform (through SimpleITK), and basic properties."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segbench.augment import warp
from segbench.elastic import bspline_weights, dense_displacement, random_coefficients, to_sitk_transform


def _itk_field(transform: sitk.Transform, height: int, width: int) -> np.ndarray:
    """(H, W, 2) displacement (dx, dy) that ITK's transform gives at every pixel centre (origin 0, spacing 1)."""
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, (width, height), (0.0, 0.0),
                                              (1.0, 1.0), (1.0, 0.0, 0.0, 1.0))
    return sitk.GetArrayFromImage(field)


def _itk_valid(itk_field: np.ndarray) -> np.ndarray:
    """Pixels where ITK actually evaluated its spline.

    ITK returns a zero displacement for points it deems outside its valid region; for some non-integer control
    spacings (e.g. 63 px / 5 patches) floating-point rounding of the grid origin puts the whole first pixel
    column there.  Those pixels must lie on the domain border and be exactly zero; everything else is compared.
    """
    skipped = (itk_field == 0).all(-1)
    border = np.zeros_like(skipped)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert not (skipped & ~border).any()
    assert skipped.mean() < 0.05
    return ~skipped


@pytest.mark.parametrize("height,width,mesh_y,mesh_x", [(40, 40, 4, 4), (32, 64, 3, 5), (17, 29, 1, 2)])
def test_field_matches_itk_bspline_transform(height, width, mesh_y, mesh_x):
    gen = torch.Generator().manual_seed(height + width)
    coeffs = torch.randn((1, 2, mesh_y + 3, mesh_x + 3), generator=gen, dtype=torch.float64) * 4.0
    ours = dense_displacement(coeffs, height, width)[0].numpy()
    theirs = _itk_field(to_sitk_transform(coeffs[0], height, width), height, width)
    # same control grid and kernel: equal to float64 rounding (observed ~3e-14 px)
    assert np.abs(ours - theirs)[_itk_valid(theirs)].max() < 1e-9


def test_itk_fixed_parameters_follow_mesh_definition():
    transform = to_sitk_transform(np.zeros((2, 7, 9)), 37, 53)
    size_x, size_y, origin_x, origin_y, spacing_x, spacing_y = transform.GetFixedParameters()[:6]
    # mesh + 3 control points per axis, the first one a full spacing before the first pixel centre
    assert (size_x, size_y) == (9, 7)
    assert spacing_x == pytest.approx(52 / 6) and spacing_y == pytest.approx(36 / 4)
    assert (origin_x, origin_y) == (pytest.approx(-spacing_x), pytest.approx(-spacing_y))


def test_resampled_image_matches_sitk_resample_linear():
    height, width = 48, 64
    rows, cols = np.mgrid[:height, :width]
    image = np.sin(rows / 5.0) * np.cos(cols / 7.0) + 0.01 * cols        # smooth, non-symmetric
    gen = torch.Generator().manual_seed(3)
    coeffs = torch.randn((1, 2, 8, 8), generator=gen, dtype=torch.float64) * 3.0
    itk_out = sitk.GetArrayFromImage(sitk.Resample(sitk.GetImageFromArray(image), to_sitk_transform(
        coeffs[0], height, width), sitk.sitkLinear, 0.0, sitk.sitkFloat64))
    # warp() with the identity affine: exactly the grid augment_batch builds for an elastic-only spec
    images = torch.from_numpy(image)[None, None]
    masks = torch.zeros((1, height, width), dtype=torch.int64)
    ours, _ = warp(images, masks, torch.eye(2, dtype=torch.float64)[None], torch.zeros((1, 2), dtype=torch.float64),
                   coeffs)
    # ITK returns the default value where the sample point leaves the buffer; we reflect there instead
    field = dense_displacement(coeffs, height, width)[0].numpy()
    x, y = cols + field[..., 0], rows + field[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    inside &= _itk_valid(_itk_field(to_sitk_transform(coeffs[0], height, width), height, width))
    assert inside.mean() > 0.8
    assert np.abs(ours[0, 0].numpy() - itk_out)[inside].max() < 1e-9


def test_weights_are_a_partition_of_unity_and_constant_coefficients_translate():
    for n, mesh in [(1, 4), (2, 1), (31, 4), (256, 7)]:
        weights = bspline_weights(n, mesh, dtype=torch.float64)
        assert weights.shape == (n, mesh + 3)
        assert torch.allclose(weights.sum(1), torch.ones(n, dtype=torch.float64))
        assert int((weights[n // 2] > 0).sum()) <= 4
    coeffs = torch.zeros((2, 2, 7, 7))
    coeffs[:, 0], coeffs[:, 1] = 2.5, -1.0
    field = dense_displacement(coeffs, 20, 30)
    assert field.shape == (2, 20, 30, 2)
    assert torch.allclose(field[..., 0], torch.full_like(field[..., 0], 2.5), atol=1e-5)
    assert torch.allclose(field[..., 1], torch.full_like(field[..., 1], -1.0), atol=1e-5)


def test_random_coefficients_shape_statistics_and_determinism():
    coeffs = random_coefficients(500, 10.0, 4, torch.Generator().manual_seed(0))
    assert coeffs.shape == (500, 2, 7, 7) and coeffs.dtype == torch.float32
    assert coeffs.std().item() == pytest.approx(10.0, rel=0.03)
    again = random_coefficients(500, 10.0, 4, torch.Generator().manual_seed(0))
    assert torch.equal(coeffs, again)
    with pytest.raises(ValueError):
        bspline_weights(10, 0)
