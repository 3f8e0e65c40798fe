"""`folder`: any `images/` + `masks/` pair of folders, matched by file stem (a user's own data).

Masks hold class ids 0..K-1 for the K names in option `classes` (default background, foreground). With two
classes a mask stored as 0/255 (the usual binary PNG) is read as 0/1. Any other value is an error naming the
file. Image channels: option `channels`, else 1 when the first image is gray and 3 otherwise.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pairgen.datasets.base import Case, DatasetAdapter, Sample, register
from pairgen.core.images import image_mode, read_image, read_label_image
from pairgen.datasets.imageio import check_values, find_dirs, require_root
from pairgen.core.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
MASK_SUFFIXES = (".png", ".gif", ".bmp", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
EXPECTED = "images/ and masks/ folders with files matched by name (images/a.png ↔ masks/a.png)"


def load_folder_case(image_path: Path, mask_path: Path, channels: int, n_classes: int) -> Sample:
    """Read one pair → Sample (image float32 H×W×channels, mask uint8 ids 0..n_classes-1, spacing unknown)."""
    image = read_image(image_path, channels)
    mask = read_label_image(mask_path)
    if n_classes == 2 and mask.max() > 1:
        check_values(mask_path, mask, (0, 255))   # binary mask saved as 0/255
        mask = (mask > 0).astype(np.uint8)
    check_values(mask_path, mask, range(n_classes))
    if mask.shape != image.shape[:2]:
        raise UserError(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]}, "
                        f"the image {image_path.name} is {image.shape[0]}x{image.shape[1]}")
    return Sample(image=image, mask=mask, spacing_mm=None)


def _by_stem(directory: Path, suffixes: tuple[str, ...], errors: list[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            if path.stem in files:
                errors.append(f"{path}: same name as {files[path.stem].name}; keep one file per stem")
            else:
                files[path.stem] = path
    return files


@register
class Folder(DatasetAdapter):
    """images/ + masks/ below `root`; options `classes` (list of names, index = id) and `channels` (1 or 3)."""

    name = "folder"

    def __init__(self, root: Path | None, classes: tuple[str, ...] | list[str] | None = None,
                 channels: int | None = None, **options) -> None:
        super().__init__(root, **options)
        self._classes = list(classes) if classes else ["background", "foreground"]
        if len(self._classes) < 2 or len(set(self._classes)) != len(self._classes):
            raise UserError(f"classes {self._classes}: need at least two distinct class names (index 0 = background)")
        if channels not in (None, 1, 3):
            raise UserError(f"channels {channels}: must be 1 or 3")
        self._channels = channels

    @property
    def class_names(self) -> list[str]:
        return list(self._classes)

    @property  # type: ignore[override]  # per tree, not per class: read from the first image's header
    def channels(self) -> int:
        return self.detect_channels()

    def _dirs(self) -> tuple[Path, Path]:
        root = require_root(self.root, self.name, EXPECTED)
        found = [d.parent for d in find_dirs(root, "images", max_depth=3) if (d.parent / "masks").is_dir()]
        if not found:
            raise UserError(f"{root}: no images/ + masks/ folders at or below it; expected {EXPECTED}")
        if len(found) > 1:
            raise UserError(f"{root}: several images/ + masks/ pairs ({', '.join(map(str, found[:3]))}); "
                            "pass one as --root")
        return found[0] / "images", found[0] / "masks"

    def detect_channels(self) -> int:
        """Option `channels`, else from the first image's header (gray → 1, colour → 3)."""
        if self._channels is not None:
            return self._channels
        image_dir, _ = self._dirs()
        images = _by_stem(image_dir, IMAGE_SUFFIXES, [])
        if not images:
            raise UserError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self._channels = 1 if image_mode(next(iter(images.values()))) in GRAY_MODES else 3
        return self._channels

    def scan(self) -> tuple[list[Case], list[str], list[str]]:
        """(cases, errors: images without mask, warnings: masks without image)."""
        image_dir, mask_dir = self._dirs()
        errors: list[str] = []
        images = _by_stem(image_dir, IMAGE_SUFFIXES, errors)
        masks = _by_stem(mask_dir, MASK_SUFFIXES, errors)
        if not images:
            errors.append(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); expected {EXPECTED}")
            return [], errors, []
        channels = self.detect_channels()
        cases = []
        for stem, image_path in images.items():
            if stem not in masks:
                errors.append(f"{image_path}: no mask {mask_dir / stem}.png (or .gif/.bmp/.tif)")
                continue
            cases.append(Case(stem, "all", partial(load_folder_case, image_path, masks[stem], channels,
                                                   len(self._classes))))
        warnings = [f"{path}: mask without an image in {image_dir}" for s, path in masks.items() if s not in images]
        return sorted(cases, key=lambda c: c.case_id), errors, warnings
