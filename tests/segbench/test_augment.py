"""Augmentation: spec parsing, image/mask alignment, exactness of flips and translations, statistics, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pairgen.core.errors import UserError
from segbench.augment import NAMES, PRESETS, AugSpec, augment_batch, parse_spec, sample_geometry, warp

GEOMETRIC = ["flip=1", "translate=4", "rotate=20", "crop=0.7", "elastic=3", "elastic=4,elastic_grid=6",
             "flip,translate=3,rotate=10,crop=0.8,elastic=3"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shapes_batch(b: int = 6, h: int = 48, w: int = 64, c: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks with sharp shapes (a rectangle and a disc at random places); image = mask * 0.5 - 0.5."""
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[:h, :w]
    masks = np.zeros((b, h, w), np.int64)
    for i in range(b):
        r0, c0 = rng.integers(4, h // 2), rng.integers(4, w // 2)
        masks[i, r0:r0 + h // 4, c0:c0 + w // 3] = 1
        cy, cx, rad = rng.uniform(h * 0.3, h * 0.7), rng.uniform(w * 0.3, w * 0.7), min(h, w) * 0.15
        masks[i][(rows - cy) ** 2 + (cols - cx) ** 2 < rad**2] = 1
    masks_t = torch.from_numpy(masks)
    images = (masks_t.float() * 0.5 - 0.5)[:, None].repeat(1, c, 1, 1)
    return images, masks_t


# ------------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text", ["none", "", "  ", "NONE"])
def test_identity_specs(text):
    spec = parse_spec(text)
    assert spec == AugSpec() and spec.is_identity and str(spec) == "none"


def test_full_spec_and_canonical_round_trip():
    spec = parse_spec(" flip , shift=0.05,scale=0.05,translate=5,rotate=10,noise=0.02,crop=0.9,elastic=10,"
                      "elastic_grid=5,clip")
    assert spec == AugSpec(flip=0.5, shift=0.05, scale=0.05, translate=5, rotate=10, noise=0.02, crop=0.9,
                           elastic=10, elastic_grid=5, clip=True)
    assert not spec.is_identity
    assert str(spec) == "flip,shift=0.05,scale=0.05,translate=5,rotate=10,noise=0.02,crop=0.9,elastic=10," \
                        "elastic_grid=5,clip"
    for text in ["flip=0.25", "rotate=12.5,translate=1", "elastic=2", "crop=1", "shift=0", "clip"]:
        assert parse_spec(str(parse_spec(text))) == parse_spec(text)
    assert str(parse_spec("translate=3,flip=0.25")) == "flip=0.25,translate=3"   # order-independent
    assert str(parse_spec("crop=1,shift=0")) == "none"                            # no-op values vanish


def test_presets():
    assert parse_spec("thesis-lung") == AugSpec(shift=0.5, scale=0.5, translate=10, elastic=10, ref=256)
    assert parse_spec("thesis-cityscapes") == AugSpec(flip=0.5)
    assert str(parse_spec("thesis-lung")) == "shift=0.5,scale=0.5,translate=10,elastic=10,ref=256"
    assert str(parse_spec("thesis-cityscapes")) == "flip"
    assert parse_spec("thesis-lung,elastic_grid=6") == AugSpec(shift=0.5, scale=0.5, translate=10, elastic=10,
                                                               elastic_grid=6, ref=256)
    assert parse_spec("thesis-lung,shift=0") == AugSpec(scale=0.5, translate=10, elastic=10, ref=256)


def test_pixel_parameters_scale_with_reference_width():
    """ref=256: 8 px at 256 px is 1 px at 32 px; an integer translation then equals a reflected shift."""
    images = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).repeat(400, 1, 1, 1)
    masks = torch.zeros(400, 32, 32, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)
    scaled, _ = augment_batch(images, masks, parse_spec("translate=8,ref=256"), gen)
    gen = torch.Generator().manual_seed(0)
    direct, _ = augment_batch(images, masks, parse_spec("translate=1"), gen)
    torch.testing.assert_close(scaled, direct)
    assert not torch.equal(direct, images)
    assert set(PRESETS) == {"thesis-lung", "thesis-cityscapes"}


@pytest.mark.parametrize("text,bad", [
    ("blur=2", "blur=2"), ("flip,shft=0.1", "shft=0.1"), ("shift=-0.1", "shift=-0.1"), ("flip=1.5", "flip=1.5"),
    ("crop=0", "crop=0"), ("crop=1.2", "crop=1.2"), ("translate=abc", "translate=abc"), ("rotate", "rotate"),
    ("noise=", "noise="), ("shift=nan", "shift=nan"), ("elastic=inf", "elastic=inf"), ("clip=1", "clip=1"),
    ("elastic=3,elastic_grid=0", "elastic_grid=0"), ("elastic=3,elastic_grid=2.5", "elastic_grid=2.5"),
    ("elastic_grid=4", "elastic_grid=4"), ("flip,flip=0.3", "flip=0.3"), ("flip,,shift=1", "''"),
    ("flip,thesis-lung", "thesis-lung"), ("flip,none", "none"), ("thesis-brain", "thesis-brain"),
])
def test_errors_name_the_token_and_list_valid_names(text, bad):
    with pytest.raises(UserError) as info:
        parse_spec(text)
    message = str(info.value)
    assert bad in message and "valid names" in message
    assert all(name in message for name in NAMES) and "thesis-lung" in message


# ---------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("text", GEOMETRIC)
def test_geometric_transforms_keep_image_and_mask_aligned(text):
    images, masks = _shapes_batch()
    out_images, out_masks = augment_batch(images, masks, parse_spec(text), _gen(2))
    assert not torch.equal(out_masks, masks)          # something actually moved
    agreement = ((out_images[:, 0] > -0.25).long() == out_masks).float().mean().item()
    assert agreement > 0.99, (text, agreement)


def test_flip_exactness():
    images, masks = torch.randn(5, 3, 16, 24), torch.randint(0, 8, (5, 16, 24))
    out_images, out_masks = augment_batch(images, masks, parse_spec("flip=1"), _gen())
    assert torch.equal(out_images, images.flip(-1)) and torch.equal(out_masks, masks.flip(-1))
    twice = augment_batch(*augment_batch(images, masks, parse_spec("flip=1")), parse_spec("flip=1"))
    assert torch.equal(twice[0], images) and torch.equal(twice[1], masks)
    # the resampling path (used when flip is combined with other geometry) gives the same flip
    mirror = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]).expand(5, 2, 2)
    warped_images, warped_masks = warp(images, masks, mirror, torch.zeros(5, 2))
    assert torch.allclose(warped_images, images.flip(-1), atol=1e-5) and torch.equal(warped_masks, masks.flip(-1))


def test_flip_probability():
    images = torch.arange(8.0).expand(400, 1, 1, 8).contiguous()
    out, _ = augment_batch(images, torch.zeros(400, 1, 8, dtype=torch.long), parse_spec("flip=0.3"), _gen(4))
    flipped = out[:, 0, 0, 0] == 7
    assert torch.equal(out[flipped], images[flipped].flip(-1)) and torch.equal(out[~flipped], images[~flipped])
    assert flipped.float().mean().item() == pytest.approx(0.3, abs=0.07)


@pytest.mark.parametrize("dy,dx", [(3, -5), (-7, 2), (0, 11)])
def test_integer_translation_is_a_shift_with_symmetric_reflection(dy, dx):
    h, w = 20, 32
    images, masks = torch.randn(1, 2, h, w, dtype=torch.float64), torch.randint(0, 8, (1, h, w))
    # offset is the inverse map (output point -> input point): content moves by (+dx, +dy)
    out_images, out_masks = warp(images, masks, torch.eye(2)[None], torch.tensor([[-dx, -dy]], dtype=torch.float32))
    pad = ((0, 0), (0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx)))
    padded = np.pad(images.numpy(), pad, mode="symmetric")
    expected = padded[..., abs(dy) - dy:abs(dy) - dy + h, abs(dx) - dx:abs(dx) - dx + w]
    assert np.abs(out_images.numpy() - expected).max() < 1e-9
    padded_masks = np.pad(masks.numpy(), pad[1:], mode="symmetric")
    assert np.array_equal(out_masks.numpy(), padded_masks[:, abs(dy) - dy:abs(dy) - dy + h,
                                                          abs(dx) - dx:abs(dx) - dx + w])


def test_rotation_by_90_degrees_and_centre_crop_geometry():
    images, masks = torch.randn(1, 1, 16, 16, dtype=torch.float64), torch.randint(0, 8, (1, 16, 16))
    quarter = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])
    out_images, out_masks = warp(images, masks, quarter, torch.zeros(1, 2))
    assert torch.allclose(out_images, torch.rot90(images, 1, (-2, -1)), atol=1e-6) or \
        torch.allclose(out_images, torch.rot90(images, -1, (-2, -1)), atol=1e-6)
    # centred crop of half the side on a column ramp: the output ramp has half the slope, same centre
    ramp = torch.arange(32.0, dtype=torch.float64).expand(1, 1, 8, 32)
    zoomed, _ = warp(ramp, torch.zeros(1, 8, 32, dtype=torch.long), 0.5 * torch.eye(2)[None], torch.zeros(1, 2))
    assert torch.allclose(zoomed[0, 0, 0], 15.5 + 0.5 * (torch.arange(32.0, dtype=torch.float64) - 15.5))


def test_sampled_geometry_statistics():
    matrix, offset, coeffs = sample_geometry(parse_spec("translate=5"), 4000, 32, 64, _gen())
    assert torch.equal(matrix, torch.eye(2).expand(4000, 2, 2)) and coeffs is None
    assert offset.std(0).tolist() == pytest.approx([5, 5], rel=0.05)
    matrix, _, _ = sample_geometry(parse_spec("rotate=10"), 4000, 32, 64, _gen())
    assert torch.rad2deg(torch.asin(matrix[:, 1, 0])).std().item() == pytest.approx(10, rel=0.05)
    matrix, offset, _ = sample_geometry(parse_spec("crop=0.75"), 2000, 32, 64, _gen())
    assert torch.allclose(matrix, 0.75 * torch.eye(2).expand(2000, 2, 2))
    room = torch.tensor([64 * 0.25 / 2, 32 * 0.25 / 2])
    assert (offset.abs() <= room).all() and (offset.abs().amax(0) > 0.9 * room).all()
    _, _, coeffs = sample_geometry(parse_spec("elastic=7,elastic_grid=3"), 500, 32, 64, _gen())
    assert coeffs.shape == (500, 2, 6, 6) and coeffs.std().item() == pytest.approx(7, rel=0.05)


def test_multiclass_masks_keep_their_class_set():
    gen = _gen(5)
    coarse = torch.randint(0, 8, (4, 1, 8, 16), generator=gen).float()
    masks = torch.nn.functional.interpolate(coarse, size=(32, 64), mode="nearest")[:, 0].long()
    images = torch.rand(4, 3, 32, 64, generator=gen) * 2 - 1
    spec = parse_spec("flip,translate=3.3,rotate=17,crop=0.83,elastic=4")
    _, out_masks = augment_batch(images, masks, spec, gen)
    assert out_masks.dtype == torch.int64 and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= set(masks.unique().tolist())
    assert (out_masks != masks).float().mean() > 0.1


# --------------------------------------------------------------------------------------------------- intensity


def test_intensity_transforms_leave_masks_alone_and_statistics():
    masks = torch.randint(0, 8, (3000, 4, 4))
    zeros, ones = torch.zeros(3000, 1, 4, 4), torch.ones(3000, 1, 4, 4)
    out, out_masks = augment_batch(zeros, masks, parse_spec("shift=0.3"), _gen())
    assert out_masks is masks
    assert (out == out[:, :, :1, :1]).all()                         # one shift per image
    assert out[:, 0, 0, 0].std().item() == pytest.approx(0.3, rel=0.05)
    out, _ = augment_batch(ones, masks, parse_spec("scale=0.2"), _gen())
    assert out[:, 0, 0, 0].mean().item() == pytest.approx(1.0, abs=0.02)
    assert out[:, 0, 0, 0].std().item() == pytest.approx(0.2, rel=0.05)
    out, out_masks = augment_batch(zeros, masks, parse_spec("noise=0.1,shift=0.2,scale=0.5"), _gen())
    assert torch.equal(out_masks, masks)
    assert (out - out.mean((2, 3), keepdim=True)).std().item() == pytest.approx(0.1 * math.sqrt(15 / 16), rel=0.05)
    out, _ = augment_batch(zeros, masks, parse_spec("shift=2,clip"), _gen())
    assert out.abs().max().item() == 1.0
    out, _ = augment_batch(zeros, masks, parse_spec("shift=2"), _gen())
    assert out.abs().max().item() > 1.0                             # not clipped by default


# ------------------------------------------------------------------------------------------- contract details


def test_identity_returns_inputs_unchanged():
    images, masks = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    out_images, out_masks = augment_batch(images, masks, parse_spec("none"), _gen())
    assert out_images is images and out_masks is masks


def test_determinism_with_a_seeded_generator():
    images, masks = _shapes_batch(4, 32, 32, 3)
    spec = parse_spec("flip,shift=0.1,scale=0.1,translate=3,rotate=10,noise=0.05,crop=0.9,elastic=3")
    first, second = augment_batch(images, masks, spec, _gen(7)), augment_batch(images, masks, spec, _gen(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = augment_batch(images, masks, spec, _gen(8))
    assert not torch.equal(first[0], other[0])
    augment_batch(images, masks, spec)                              # global RNG when no generator is given


@pytest.mark.parametrize("channels,height,width,dtype", [(1, 32, 32, torch.float32), (3, 32, 64, torch.float32),
                                                         (3, 40, 24, torch.float64), (1, 32, 64, torch.bfloat16)])
def test_shapes_dtypes_and_channels(channels, height, width, dtype):
    images, masks = _shapes_batch(3, height, width, channels)
    images = images.to(dtype)
    spec = parse_spec("flip,shift=0.05,scale=0.05,translate=2,rotate=5,noise=0.02,crop=0.9,elastic=2")
    out_images, out_masks = augment_batch(images, masks, spec, _gen())
    assert out_images.shape == images.shape and out_images.dtype == dtype
    assert out_masks.shape == masks.shape and out_masks.dtype == torch.int64
    # every channel went through the same geometry (intensity draws are per image, so channels stay equal here
    # apart from the per-pixel noise)
    assert (out_images[:, :1] - out_images).abs().float().max() < 0.3


def test_bad_tensors_are_rejected():
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), parse_spec("flip"))
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8), parse_spec("flip"))
