"""Standard (non-GAN) data augmentation for image+mask minibatches, batched on the tensors' device.

Spec strings (``segbench train --aug``), parsed by ``parse_spec``; docs/AUGMENTATION.md has the full table:

  none | thesis-lung | thesis-cityscapes | comma list of
  flip[=p] shift=s scale=s translate=px rotate=deg noise=s crop=fraction elastic=px elastic_grid=n clip

Geometric transforms (flip, crop, rotate, translate, elastic) are folded into ONE sampling grid per sample and
applied with a single ``grid_sample`` per tensor: bilinear for images, nearest for masks, reflection at the
border.  Intensity transforms (scale, shift, noise) then touch the image only.  Images are not clipped unless
the spec says ``clip`` (see docs/AUGMENTATION.md for why).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from pairgen.core.errors import UserError
from segbench.elastic import dense_displacement, random_coefficients

DEFAULT_FLIP_P = 0.5
DEFAULT_ELASTIC_GRID = 4


@dataclass(frozen=True)
class AugSpec:
    """One augmentation configuration; the identity is ``AugSpec()``.  Field order is the canonical token order."""

    flip: float = 0.0          # probability of a horizontal (left-right) flip per sample
    shift: float = 0.0         # intensity shift: x + N(0, shift), one draw per image
    scale: float = 0.0         # intensity scaling: x * (1 + N(0, scale)), one draw per image
    translate: float = 0.0     # translation N(0, translate) pixels per axis
    rotate: float = 0.0        # rotation N(0, rotate) degrees about the image centre
    noise: float = 0.0         # additive Gaussian noise N(0, noise) per pixel and channel
    crop: float = 1.0          # crop window side = crop * image side, random position, resized back (1: off)
    elastic: float = 0.0       # B-spline control-point displacement N(0, elastic) pixels per axis
    elastic_grid: int = DEFAULT_ELASTIC_GRID  # ITK TransformDomainMeshSize per axis ((n+3)^2 control points)
    clip: bool = False         # clamp augmented images to [-1, 1]
    ref: float = 0.0           # >0: translate/elastic are pixels at an image WIDTH of `ref`, scaled by W/ref

    @property
    def is_identity(self) -> bool:
        """True when augment_batch returns its inputs unchanged."""
        return not (self.has_geometry or self.has_intensity)

    @property
    def has_geometry(self) -> bool:
        return (self.flip > 0 or self.translate > 0 or self.rotate > 0 or self.crop < 1 or self.elastic > 0)

    @property
    def has_intensity(self) -> bool:
        # clip alone is a no-op on in-range inputs but is still a requested change, so it counts
        return self.shift > 0 or self.scale > 0 or self.noise > 0 or self.clip

    def __str__(self) -> str:
        """Canonical spec string: ``none`` or the non-default tokens in field order (presets are spelled out, so a
        run label says what was done); ``parse_spec(str(s)) == s``."""
        if self.is_identity:
            return "none"
        tokens = []
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if f.name == "elastic_grid" and not self.elastic > 0:
                continue
            if value == default:
                continue
            if f.name == "clip":
                tokens.append("clip")
            elif f.name == "ref" and not (self.translate > 0 or self.elastic > 0):
                continue
            elif f.name == "flip" and value == DEFAULT_FLIP_P:
                tokens.append("flip")
            else:
                tokens.append(f"{f.name}={format(value, '.12g')}")
        return ",".join(tokens)


# Thesis presets; docs/AUGMENTATION.md explains the row chosen from tables 5.1 / 5.3 (the bold rows are lost in
# the text of the thesis).
PRESETS: dict[str, AugSpec] = {
    # table 5.1, best validation Dice 0.9712: shift 0.5, scale 0.5, translation 10 px, elastic 10 px
    # Pixel values are the thesis' at 256 px (ref=256) and shrink with the training resolution: 10 px at 32 px
    # would move a third of the image and fold the elastic field.
    "thesis-lung": AugSpec(shift=0.5, scale=0.5, translate=10.0, elastic=10.0, ref=256.0),
    # table 5.3 + section 5.2.3: "just use horizontal flipping" (mIoU 0.8042)
    "thesis-cityscapes": AugSpec(flip=DEFAULT_FLIP_P),
}

# float-valued name -> (validity check, description of the valid range for the error message)
_FLOAT_RANGES = {
    "flip": (lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    "shift": (lambda v: v >= 0.0, "a standard deviation >= 0"),
    "scale": (lambda v: v >= 0.0, "a standard deviation >= 0"),
    "translate": (lambda v: v >= 0.0, "a standard deviation in pixels >= 0"),
    "rotate": (lambda v: v >= 0.0, "a standard deviation in degrees >= 0"),
    "noise": (lambda v: v >= 0.0, "a standard deviation >= 0"),
    "crop": (lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]"),
    "elastic": (lambda v: v >= 0.0, "a standard deviation in pixels >= 0"),
    "ref": (lambda v: v >= 0.0, "a reference image width in pixels >= 0 (0: no scaling)"),
}
NAMES = tuple(f.name for f in fields(AugSpec))


# a valid --aug for datasets that declare an op unsafe (the error message suggests it)
SAFE_EXAMPLE = {"scr-lung": "thesis-lung"}


def _valid_names() -> str:
    return f"valid names: {', '.join(NAMES)}; presets: none, {', '.join(PRESETS)}"


def _failer(spec: str, token: str) -> Callable[[str], UserError]:
    """Error factory for one token: the message names the spec, the token and every valid name."""
    return lambda reason: UserError(f"augmentation spec {spec!r}: token {token!r}: {reason}; {_valid_names()}")


def parse_spec(spec: str) -> AugSpec:
    """Parse an augmentation spec string into an AugSpec.

    ``none``/empty: identity.  A preset name may come first and be followed by overrides
    (``thesis-lung,elastic_grid=6``).  Each name may appear once.  Raises UserError naming the offending token.
    """
    text = (spec or "").strip()
    if text.lower() == "none" or not text:
        return AugSpec()
    tokens = [t.strip() for t in text.split(",")]
    base, values = AugSpec(), {}
    for i, token in enumerate(tokens):
        fail = _failer(spec, token)
        if i == 0 and token in PRESETS:
            base = PRESETS[token]
            continue
        name, has_value, raw = token.partition("=")
        name, raw = name.strip(), raw.strip()
        if not token:
            raise fail("empty token")
        if name in PRESETS or name == "none":
            raise fail("a preset must be the first token (none must be alone)")
        if name not in NAMES:
            raise fail("unknown name")
        if name in values:
            raise fail("given twice")
        if name == "clip":
            if has_value:
                raise fail("clip takes no value")
            values[name] = True
            continue
        if not has_value and name == "flip":
            values[name] = DEFAULT_FLIP_P
            continue
        if not has_value or not raw:
            raise fail(f"{name} needs a value ({name}=...)")
        if name == "elastic_grid":
            if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
                raise fail("elastic_grid must be an integer >= 1")
            values[name] = int(raw)
            continue
        try:
            value = float(raw)
        except ValueError:
            raise fail(f"{raw!r} is not a number") from None
        ok, expected = _FLOAT_RANGES[name]
        if not math.isfinite(value) or not ok(value):
            raise fail(f"{name} must be {expected}, got {raw}")
        values[name] = value
    result = replace(base, **values)
    if "elastic_grid" in values and not result.elastic > 0:
        raise _failer(spec, f"elastic_grid={values['elastic_grid']}")("elastic_grid needs elastic=... as well")
    return result


def refuse_unsafe(spec: AugSpec, dataset: str, allow: bool = False) -> None:
    """Raise UserError when `spec` uses an op the dataset's adapter declares unsafe (SCR lung: a flip swaps the
    left and right lung), unless `allow` (--allow-unsafe-aug). Unknown datasets declare nothing."""
    from pairgen.datasets.registry import unsafe_augmentations_of

    default = AugSpec()
    for op, reason in unsafe_augmentations_of(dataset).items():
        if not allow and getattr(spec, op) != getattr(default, op):
            raise UserError(f"--aug {spec}: {op} is unsafe for {dataset}: {reason}; choose another --aug "
                            f"(e.g. {SAFE_EXAMPLE.get(dataset, 'none')}) or pass --allow-unsafe-aug to use it on purpose")


# ----------------------------------------------------------------------------------------------------- sampling


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """N(0, 1) float32 drawn on the generator's own device (required by torch), returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) float32, same device handling as _randn."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=torch.float32).to(device)


def sample_geometry(spec: AugSpec, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor | None]:
    """Draw per-sample geometric parameters; see ``warp`` for what they mean.

    Returns (matrix (B, 2, 2), offset (B, 2), coeffs (B, 2, g+3, g+3) or None), float32, pixels, (x, y) order.
    Draw order is fixed (flip, crop, rotate, translate, elastic) so results are reproducible per generator.
    """
    device = torch.device(device)
    eye = torch.eye(2, device=device).expand(batch, 2, 2)
    matrix, offset = eye.clone(), torch.zeros(batch, 2, device=device)
    # inverse mapping (output point -> input point): q = R(theta) (f * Flip p + o) - t
    if spec.flip > 0:
        flipped = _rand((batch,), generator, device) < spec.flip
        matrix[:, 0, 0] = torch.where(flipped, -1.0, 1.0)
    if spec.crop < 1:
        # the window (side f * n, centred on o) must stay inside the image: |o| <= (1 - f) * n / 2
        half_room = torch.tensor([width, height], device=device, dtype=torch.float32) * (1 - spec.crop) / 2
        offset = (2 * _rand((batch, 2), generator, device) - 1) * half_room
        matrix = matrix * spec.crop
    if spec.rotate > 0:
        theta = _randn((batch,), generator, device) * math.radians(spec.rotate)
        cos, sin = torch.cos(theta), torch.sin(theta)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        matrix, offset = rot @ matrix, (rot @ offset[..., None])[..., 0]
    if spec.translate > 0:
        offset = offset - _randn((batch, 2), generator, device) * spec.translate
    coeffs = None
    if spec.elastic > 0:
        coeffs = random_coefficients(batch, spec.elastic, spec.elastic_grid, generator, device)
    return matrix, offset, coeffs


def sampling_grid(matrix: Tensor, offset: Tensor, coeffs: Tensor | None, height: int, width: int) -> Tensor:
    """grid_sample grid (B, H, W, 2) in [-1, 1] (align_corners=False) for q = matrix @ (p + d(p)) + offset.

    p: output pixel centre relative to the image centre, pixels (x, y); d: the elastic field (elastic.py), applied
    in output space exactly as ITK's BSplineTransform does.  One grid carries every geometric transform.
    """
    device, dtype = matrix.device, matrix.dtype
    px = (torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2).view(1, 1, width)
    py = (torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2).view(1, height, 1)
    if coeffs is not None:
        field = dense_displacement(coeffs.to(dtype), height, width)                # (B, H, W, 2)
        px, py = px + field[..., 0], py + field[..., 1]
    m = matrix[:, :, :, None, None]                                                # (B, 2, 2, 1, 1)
    o = offset[:, :, None, None]
    # written out per component: plain broadcast multiply-adds, no (B, H, W, 2, 2) intermediate
    qx = m[:, 0, 0] * px + m[:, 0, 1] * py + o[:, 0]
    qy = m[:, 1, 0] * px + m[:, 1, 1] * py + o[:, 1]
    # centred pixels -> normalised: pixel centre c maps to (2c + 1)/n - 1 = 2q/n with align_corners=False
    return torch.stack([qx * (2.0 / width), qy * (2.0 / height)], -1)


def warp(images: Tensor, masks: Tensor, matrix: Tensor, offset: Tensor,
         coeffs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Resample images (bilinear) and masks (nearest) through one grid, reflecting at the border.

    images (B, C, H, W) float; masks (B, H, W) integer class ids.  Output: same shapes/dtypes; mask values are
    always a subset of the input's (nearest never invents ids).  Reflection is about the pixel edge (numpy
    'symmetric'), because align_corners=False.
    """
    b, _, h, w = images.shape
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    grid = sampling_grid(matrix.to(images.device, work), offset.to(images.device, work),
                         None if coeffs is None else coeffs.to(images.device, work), h, w)
    if grid.shape[0] != b:  # no elastic field: one grid row per sample still needed by grid_sample
        grid = grid.expand(b, h, w, 2)
    out = F.grid_sample(images.to(work), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # ids are exact in float32 up to 2**24, far beyond any class count here
    ids = F.grid_sample(masks[:, None].to(work), grid, mode="nearest", padding_mode="reflection",
                        align_corners=False)
    return out.to(images.dtype), ids[:, 0].round().to(masks.dtype)


# ------------------------------------------------------------------------------------------------ entry point


def augment_batch(images: Tensor, masks: Tensor, spec: AugSpec,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Apply ``spec`` to a minibatch, each sample with its own random parameters.

    images: (B, C, H, W) float, nominally in [-1, 1]; masks: (B, H, W) int64 class ids; both on one device.
    generator: drawn from on its own device (CPU or the tensors' device) and the draws moved over; pass one on
    the tensors' device to avoid a host->device copy of the per-pixel noise.  None: torch's global RNG.
    Returns (images, masks): same shapes, dtypes and device.  Images are NOT clipped unless ``spec.clip``;
    masks only hold ids present in the input.  Deterministic for a given generator state.
    """
    if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
            or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"expected images B×C×H×W and masks B×H×W, got {tuple(images.shape)} and "
                         f"{tuple(masks.shape)}")
    if not images.is_floating_point() or masks.is_floating_point():
        raise ValueError(f"images must be float and masks integer, got {images.dtype} and {masks.dtype}")
    if spec.is_identity:
        return images, masks
    b, _, h, w = images.shape
    if spec.ref > 0:
        factor = w / spec.ref
        spec = replace(spec, translate=spec.translate * factor, elastic=spec.elastic * factor, ref=0.0)
    device = images.device
    if spec.has_geometry:
        matrix, offset, coeffs = sample_geometry(spec, b, h, w, generator, device)
        only_flip = spec.flip > 0 and spec == AugSpec(flip=spec.flip, shift=spec.shift, scale=spec.scale,
                                                       noise=spec.noise, clip=spec.clip)
        if only_flip:
            # the road-scene preset: an exact index flip is faster than resampling and bit-identical
            flipped = matrix[:, 0, 0] < 0
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
            masks = torch.where(flipped[:, None, None], masks.flip(-1), masks)
        else:
            images, masks = warp(images, masks, matrix, offset, coeffs)
    if spec.has_intensity:
        work = torch.float64 if images.dtype == torch.float64 else torch.float32
        x = images.to(work)
        if spec.scale > 0:
            x = x * (1 + spec.scale * _randn((b, 1, 1, 1), generator, device).to(work))
        if spec.shift > 0:
            x = x + spec.shift * _randn((b, 1, 1, 1), generator, device).to(work)
        if spec.noise > 0:
            x = x + spec.noise * _randn(tuple(images.shape), generator, device).to(work)
        if spec.clip:
            x = x.clamp(-1.0, 1.0)
        images = x.to(images.dtype)
    return images, masks
