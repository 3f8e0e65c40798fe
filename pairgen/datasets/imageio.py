"""Readers shared by the adapters: images, label maps and raw JSRT `.IMG` files, plus tree-search helpers.

Every reader raises a one-line UserError naming the file on any unreadable, truncated or malformed input, so
`check_dataset` can collect them and `prepare` never shows a traceback for bad data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from pairgen.core.errors import UserError

# Everything PIL (or a truncated stream) raises while decoding a broken file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, UnidentifiedImageError,
                  Image.DecompressionBombError)

JSRT_BITS = 12                      # JSRT radiographs: 12-bit values in 16-bit big-endian words
JSRT_MAX = (1 << JSRT_BITS) - 1


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (so truncation surfaces here, not later)."""
    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except _DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {str(exc)[:100]})") from None


def image_mode(path: Path) -> str:
    """PIL mode from the header only (no pixel decoding)."""
    try:
        with Image.open(path) as handle:
            return handle.mode
    except _DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable image header ({exc.__class__.__name__})") from None


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


def read_label_image(path: Path, palette: str = "index") -> np.ndarray:
    """Label file → uint8 H×W of stored values.

    palette='index': a palette (P) image gives its indices (label-id PNGs saved with a colour map).
    palette='gray':  a palette image gives the gray level of each entry (binary GIF masks such as SCR's).
    Colour images are accepted only when all channels agree (a gray mask saved as RGB).
    """
    image = open_image(path)
    if image.mode == "P" and palette == "gray":
        image = image.convert("L")
    elif image.mode == "1":
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim == 3:
        if not (array[..., :3] == array[..., :1]).all():
            raise UserError(f"{path}: colour mask; expected a single-channel label image of class ids")
        array = array[..., 0]
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise UserError(f"{path}: label values {int(array.min())}..{int(array.max())} do not fit in 0..255")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def jsrt_side(path: Path, n_bytes: int) -> int:
    """Side of a square headerless 16-bit image from its byte count (8388608 bytes → 2048)."""
    side = math.isqrt(n_bytes // 2)
    if n_bytes % 2 or side * side * 2 != n_bytes or side == 0:
        raise UserError(f"{path}: {n_bytes} bytes is not a square 16-bit JSRT image "
                        f"(2048x2048 is {2048 * 2048 * 2} bytes); truncated or not a JSRT .IMG file")
    return side


def read_jsrt_raw(path: Path) -> np.ndarray:
    """Headerless JSRT `.IMG` (12-bit values, big-endian uint16, square) → float32 side×side×1 in [0, 1].

    Raw JSRT stores transmitted intensity, so air (lungs) has HIGH values and shows white when displayed as is;
    we invert (1 - v/4095) to the usual radiograph polarity (air dark, bone bright) that the PNG copies have.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    side = jsrt_side(path, len(raw))
    values = np.frombuffer(raw, dtype=">u2").reshape(side, side)
    top = int(values.max())
    if top > JSRT_MAX:
        # little-endian or 16-bit data would show here: refuse rather than silently mis-scale
        raise UserError(f"{path}: value {top} exceeds 12 bits; expected big-endian 12-bit JSRT data")
    image = 1.0 - values.astype(np.float32) / JSRT_MAX
    return image[..., None]


def image_shape(path: Path) -> tuple[int, int]:
    """(rows, cols) of an image file from its header (or byte count for a JSRT .IMG)."""
    if Path(path).suffix.lower() == ".img":
        side = jsrt_side(path, Path(path).stat().st_size)
        return side, side
    try:
        with Image.open(path) as handle:
            cols, rows = handle.size
    except _DECODE_ERRORS as exc:
        raise UserError(f"{path}: unreadable image header ({exc.__class__.__name__})") from None
    return rows, cols


def check_values(path: Path, mask: np.ndarray, allowed: Iterable[int]) -> None:
    """UserError naming the file and the offending values when `mask` holds values outside `allowed`."""
    # bincount over uint8 is ~50x faster than np.unique on a 1024² mask
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)) if mask.dtype == np.uint8 else np.unique(mask)
    unknown = sorted(set(present.tolist()) - set(int(a) for a in allowed))
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" …" if len(unknown) > 10 else "")
        raise UserError(f"{path}: unexpected label values {shown}")


def require_root(root: Path | None, dataset: str, expected: str) -> Path:
    """The root as a Path, or a UserError saying what was expected and where we looked."""
    if root is None:
        raise UserError(f"dataset {dataset!r} needs --root: a folder containing {expected}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (dataset {dataset!r} expects {expected})")
    return root


def find_dirs(root: Path, name: str, max_depth: int = 4) -> list[Path]:
    """Folders called `name` at or below `root` (depth-limited, sorted; hidden folders skipped)."""
    found: list[Path] = []
    root = Path(root)
    if root.name == name:
        found.append(root)
    base_depth = len(root.parts)
    for current, subdirs, _ in os.walk(root):
        depth = len(Path(current).parts) - base_depth
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if depth >= max_depth:
            subdirs[:] = []
        found.extend(Path(current) / d for d in subdirs if d == name)
    return sorted(found)


def files_below(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """All files below `root` whose lower-case suffix is in `suffixes`, sorted, hidden entries skipped."""
    hits = []
    for current, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        hits.extend(Path(current) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in suffixes)
    return sorted(hits)


def first_problem(problems: list[str], what: str) -> UserError:
    """One-line UserError summarising a list of problems: count, then the first one."""
    more = f" (and {len(problems) - 1} more; `pairgen prepare --check` lists them all)" if len(problems) > 1 else ""
    return UserError(f"{what}: {problems[0]}{more}")
