"""THE image and label-map reader and THE resize of `pairgen prepare` (through the dataset adapters), `segbench
predict` and `segbench evaluate`: one palette rule, one decompression limit, one-line UserErrors naming the file,
so every command sees a file exactly as the others do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pairgen.core.errors import UserError
from pairgen.core.limits import MAX_IMAGE_PIXELS

# everything PIL (or a truncated stream) raises while decoding a broken file.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, UnidentifiedImageError,
                  Image.DecompressionBombError)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (so truncation surfaces here, not later); the first frame of an animated
    GIF/TIFF. The pixel count is checked from the header first (MAX_IMAGE_PIXELS: a small file can declare a huge
    image); every decoding problem is a one-line UserError naming the file."""
    try:
        with warnings.catch_warnings():   # PIL warns from 89 M pixels; MAX_IMAGE_PIXELS is the limit here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(path)
        with handle:
            if handle.width * handle.height > MAX_IMAGE_PIXELS:
                raise UserError(f"{path}: {handle.width}×{handle.height} pixels, more than the {MAX_IMAGE_PIXELS} "
                                "any reader here accepts (a decompression bomb, or an image to downscale first)")
            handle.load()
            return handle.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {str(exc)[:100]})") from None


def image_mode(path: Path) -> str:
    """PIL mode from the header only (no pixel decoding)."""
    try:
        with Image.open(path) as handle:
            return handle.mode
    except DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable image header ({exc.__class__.__name__})") from None


def header_shape(path: Path) -> tuple[int, int]:
    """(rows, cols) from the header only (no pixel decoding)."""
    try:
        with Image.open(path) as handle:
            cols, rows = handle.size
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable image header ({exc.__class__.__name__})") from None
    return rows, cols


def read_image(path: Path, channels: int) -> np.ndarray:
    """Image file → float32 H×W×channels in [0, 1]. Gray is repeated to 3 channels; colour to 1 uses PIL's luma."""
    image = open_image(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit PNG/TIFF: full range is 0..65535
        gray = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
        array = gray[..., None]
    elif image.mode == "F":
        array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[..., None]
    else:
        target = "L" if channels == 1 else "RGB"
        array = np.asarray(image.convert(target), dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[..., None]
    if array.shape[2] != channels:
        array = np.repeat(array, channels, axis=2) if array.shape[2] == 1 else array.mean(axis=2, keepdims=True)
    return np.ascontiguousarray(array, dtype=np.float32)


def read_label_image(path: Path) -> np.ndarray:
    """Label file → uint8 H×W of stored values: THE mask reader of prepare's adapters and `segbench evaluate`.

    Palette images are read through their palette colours, so indices that map to the same colour are the same
    label: a grey palette gives each pixel its grey level (SCR's 0/255 GIFs), a colour palette gives the lowest
    index holding that colour (label-id PNGs saved with a colour map, as CamVid's and Cityscapes' are).
    Grey images give their values; colour images are accepted only when all channels agree (alpha ignored).
    """
    image = open_image(path)
    if image.mode == "P":
        return _palette_labels(path, image)
    if image.mode in ("1", "CMYK", "YCbCr"):
        image = image.convert("L" if image.mode == "1" else "RGB")
    array = np.asarray(image)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise UserError(f"{path}: non-integer pixel values; a mask must hold class ids")
    if array.ndim == 3:
        colour = array[..., : 3 if array.shape[-1] >= 3 else 1]      # drop alpha
        if not (colour == colour[..., :1]).all():
            raise UserError(f"{path}: colour mask; expected a single-channel label image of class ids")
        array = colour[..., 0]
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"{path}: label values {int(array.min())}..{int(array.max())} do not fit in 0..255")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def _palette_labels(path: Path, image: Image.Image) -> np.ndarray:
    """A palette image's labels by the read_label_image rule."""
    indices = np.asarray(image)
    palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    if len(palette) < 256:   # indices past the palette's end show as black
        palette = np.concatenate([palette, np.zeros((256 - len(palette), 3), np.int64)])
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    if (palette[used] == palette[used][:, :1]).all():
        lut = palette[:, 0].astype(np.uint8)                        # grey: the level
    else:
        colours = palette[:, 0] << 16 | palette[:, 1] << 8 | palette[:, 2]
        _, first = np.unique(colours, return_index=True)             # lowest index of each colour
        lut = first[np.unique(colours, return_inverse=True)[1]].astype(np.uint8)
    return np.ascontiguousarray(lut[indices])


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 H×W×C in [0,1] → uint8 height×width×C (0..255), anti-aliased: PIL's box filter (area average) when
    shrinking, bilinear otherwise. THE resize of `pairgen prepare` and `segbench predict` (so a run's test images
    predicted from their files are the very inputs the run was scored on)."""
    rows, cols = image.shape[:2]
    resample = Image.Resampling.BOX if height <= rows and width <= cols else Image.Resampling.BILINEAR
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize((width, height),
                                                                                                  resample))
              for c in range(image.shape[2])]
    return np.clip(np.rint(np.stack(planes, axis=2) * 255.0), 0, 255).astype(np.uint8)
