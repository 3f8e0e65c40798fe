"""What the adapters share beyond pairgen.core.images: raw JSRT `.IMG` files, value checks and tree-search helpers.

Every reader raises a one-line UserError naming the file on any unreadable, truncated or malformed input, so
`check_dataset` can collect them and `prepare` never shows a traceback for bad data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from pairgen.core.errors import UserError
from pairgen.core.images import header_shape

JSRT_BITS = 12                      # JSRT radiographs: 12-bit values in 16-bit big-endian words
JSRT_MAX = (1 << JSRT_BITS) - 1


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
    return header_shape(path)


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
