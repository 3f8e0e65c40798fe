"""Cubic B-spline free-form deformation (elastic augmentation), batched in torch.

The control grid follows ITK's ``BSplineTransform`` definition exactly, so that a field built here equals the one
ITK builds from the same coefficients (tests/segbench/test_elastic.py checks this through SimpleITK):

* the transform domain runs from the first to the last pixel centre along each axis (origin 0, physical size
  ``n - 1`` pixels, spacing 1, identity direction);
* ``mesh`` (ITK: TransformDomainMeshSize) cubic patches cover that domain: control points are ``(n - 1) / mesh``
  pixels apart and pixel ``i`` lies at mesh coordinate ``u = i * mesh / (n - 1)``;
* a cubic spline needs one extra control point before and two after the domain, so there are ``mesh + 3``
  control points per axis, at mesh coordinates ``-1, 0, ..., mesh + 1``;
* displacement ``d(u) = sum_k c_k * beta3(u - (k - 1))`` with ``beta3`` the centred cubic B-spline;
* the transform maps an OUTPUT point to the INPUT point it samples (ITK's resampling convention):
  ``out(p) = in(p + d(p))``.

Coefficient layout used throughout: ``(..., 2, Ky, Kx)`` float, ``[..., 0]`` the x (column) displacement and
``[..., 1]`` the y (row) displacement in pixels, control points indexed ``[row, col]``.  Dense fields are
``(..., H, W, 2)`` with the last axis (dx, dy), the same order as ``grid_sample``'s grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # SimpleITK is only needed by the test helper below
    import numpy as np
    import SimpleITK as sitk

SPLINE_ORDER = 3


def bspline3(t: Tensor) -> Tensor:
    """Centred cubic B-spline kernel beta3(t): support (-2, 2), beta3(0) = 2/3, sums to 1 over integer shifts."""
    a = t.abs()
    inner = (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0
    outer = (2.0 - a).clamp(min=0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer)


def bspline_weights(n: int, mesh: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Weight matrix (n, mesh + 3): weight of control point k on pixel i along one axis (ITK grid placement).

    Row i sums to 1 (partition of unity); at most 4 entries per row are non-zero.
    """
    if mesh < 1:
        raise ValueError(f"mesh size must be >= 1, got {mesh}")
    # n == 1: a single pixel sits at the domain origin (ITK would have a zero-size domain; avoid dividing by 0)
    step = mesh / (n - 1) if n > 1 else 0.0
    u = torch.arange(n, device=device, dtype=dtype) * step
    knots = torch.arange(mesh + SPLINE_ORDER, device=device, dtype=dtype) - (SPLINE_ORDER - 1) / 2
    return bspline3(u[:, None] - knots[None, :])


def dense_displacement(coeffs: Tensor, height: int, width: int) -> Tensor:
    """Dense displacement field from control-point coefficients.

    coeffs: (B, 2, Ky, Kx) float, pixels ((dx, dy) channels; Ky = mesh_y + 3, Kx = mesh_x + 3).
    Returns (B, H, W, 2) float (same dtype/device), pixels, last axis (dx, dy): the offset from each output pixel
    centre to the input point it samples.
    """
    if coeffs.dim() != 4 or coeffs.shape[1] != 2:
        raise ValueError(f"coeffs must be (B, 2, Ky, Kx), got {tuple(coeffs.shape)}")
    ky, kx = coeffs.shape[-2:]
    wy = bspline_weights(height, ky - SPLINE_ORDER, coeffs.device, coeffs.dtype)
    wx = bspline_weights(width, kx - SPLINE_ORDER, coeffs.device, coeffs.dtype)
    # separable tensor-product spline: two small matmuls (K << H, W) instead of a 16-tap gather per pixel;
    # the result stays channel-first in memory (a permuted view), which is what sampling_grid reads fastest
    return (wy @ (coeffs @ wx.T)).permute(0, 2, 3, 1)


def random_coefficients(batch: int, sigma: float, mesh: int, generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """(batch, 2, mesh + 3, mesh + 3) control-point displacements ~ N(0, sigma) pixels, independently per point.

    Drawn on the generator's device (a torch.Generator only serves its own device), then moved to ``device``.
    """
    k = mesh + SPLINE_ORDER
    draw_device = generator.device if generator is not None else torch.device(device)
    noise = torch.randn((batch, 2, k, k), generator=generator, device=draw_device, dtype=torch.float32)
    return (noise * sigma).to(device=device, dtype=dtype)


def to_sitk_transform(coeffs: "np.ndarray | Tensor", height: int, width: int) -> "sitk.BSplineTransform":
    """The SimpleITK BSplineTransform equal to one sample's coefficients (tests and cross-checks only).

    coeffs: (2, Ky, Kx) pixels, layout as ``dense_displacement``.  The transform acts on an image with origin 0,
    spacing 1 and identity direction (what ``sitk.GetImageFromArray`` gives for an H x W array).
    """
    import numpy as np
    import SimpleITK as sitk

    c = coeffs.detach().cpu().numpy() if isinstance(coeffs, Tensor) else np.asarray(coeffs)
    c = c.astype(np.float64)
    ky, kx = c.shape[-2:]
    transform = sitk.BSplineTransform(2, SPLINE_ORDER)
    transform.SetTransformDomainOrigin((0.0, 0.0))
    transform.SetTransformDomainDirection((1.0, 0.0, 0.0, 1.0))
    transform.SetTransformDomainPhysicalDimensions((float(width - 1), float(height - 1)))
    transform.SetTransformDomainMeshSize((kx - SPLINE_ORDER, ky - SPLINE_ORDER))
    # ITK parameters: every x coefficient (x index fastest), then every y coefficient; a C-order ravel of a
    # [row, col] array is exactly "x fastest"
    transform.SetParameters(tuple(np.concatenate([c[0].ravel(), c[1].ravel()]).tolist()))
    return transform
