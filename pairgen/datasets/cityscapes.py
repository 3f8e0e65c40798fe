"""`cityscapes`: official fine annotations, label ids mapped onto the 8 Cityscapes categories (thesis 5.2).

Layout (below `root`, or $CITYSCAPES_DATASET): `leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`
and `gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`. The official `test` split has no
public labels and is ignored.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from pairgen.datasets.base import Case, DatasetAdapter, Sample, register
from pairgen.core.images import read_image, read_label_image
from pairgen.datasets.imageio import check_values, find_dirs
from pairgen.core.errors import UserError

ENV_VAR = "CITYSCAPES_DATASET"
CATEGORIES = ["void", "flat", "construction", "object", "nature", "sky", "human", "vehicle"]
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
EXPECTED = "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/*_gtFine_labelIds.png"

# The official label table (cityscapesScripts helpers/labels.py): label id → (name, category).
# 'license plate' has id -1: it is never written into labelIds PNGs, but it belongs to the table
# (officially category 'vehicle').
LABELS: dict[int, tuple[str, str]] = {
    0: ("unlabeled", "void"), 1: ("ego vehicle", "void"), 2: ("rectification border", "void"),
    3: ("out of roi", "void"), 4: ("static", "void"), 5: ("dynamic", "void"), 6: ("ground", "void"),
    7: ("road", "flat"), 8: ("sidewalk", "flat"), 9: ("parking", "flat"), 10: ("rail track", "flat"),
    11: ("building", "construction"), 12: ("wall", "construction"), 13: ("fence", "construction"),
    14: ("guard rail", "construction"), 15: ("bridge", "construction"), 16: ("tunnel", "construction"),
    17: ("pole", "object"), 18: ("polegroup", "object"), 19: ("traffic light", "object"),
    20: ("traffic sign", "object"),
    21: ("vegetation", "nature"), 22: ("terrain", "nature"),
    23: ("sky", "sky"),
    24: ("person", "human"), 25: ("rider", "human"),
    26: ("car", "vehicle"), 27: ("truck", "vehicle"), 28: ("bus", "vehicle"), 29: ("caravan", "vehicle"),
    30: ("trailer", "vehicle"), 31: ("train", "vehicle"), 32: ("motorcycle", "vehicle"),
    33: ("bicycle", "vehicle"),
    -1: ("license plate", "vehicle"),
}


def category_lut() -> np.ndarray:
    """uint8[256]: labelIds value → category id; 255 marks values that are not Cityscapes label ids."""
    lut = np.full(256, 255, np.uint8)
    for label_id, (_, category) in LABELS.items():
        if label_id >= 0:
            lut[label_id] = CATEGORIES.index(category)
    return lut


CATEGORY_LUT = category_lut()
KNOWN_IDS = tuple(i for i in LABELS if i >= 0)


def load_cityscapes_case(image_path: Path, label_path: Path) -> Sample:
    """Read one frame → Sample (image float32 H×W×3, mask uint8 category ids 0..7, spacing unknown)."""
    image = read_image(image_path, channels=3)
    label_ids = read_label_image(label_path)
    check_values(label_path, label_ids, KNOWN_IDS)
    if label_ids.shape != image.shape[:2]:
        raise UserError(f"{label_path}: labels are {label_ids.shape[0]}x{label_ids.shape[1]}, "
                        f"the image {image_path.name} is {image.shape[0]}x{image.shape[1]}")
    return Sample(image=image, mask=CATEGORY_LUT[label_ids], spacing_mm=None)


def locate_root(root: Path | None) -> Path:
    """The folder holding leftImg8bit/: --root (searched below), else $CITYSCAPES_DATASET."""
    if root is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise UserError(f"dataset 'cityscapes' needs --root or ${ENV_VAR}: a folder containing {EXPECTED}")
        root = Path(env)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (dataset 'cityscapes' expects {EXPECTED})")
    found = find_dirs(root, "leftImg8bit", max_depth=3)
    if not found:
        raise UserError(f"{root}: no leftImg8bit/ folder at or below it; expected {EXPECTED}")
    if len(found) > 1:
        raise UserError(f"{root}: several leftImg8bit/ folders ({', '.join(map(str, found[:3]))}); pass one as --root")
    return found[0].parent


@register
class Cityscapes(DatasetAdapter):
    """Official Cityscapes fine train/val (2975 + 500 frames), 8 categories, RGB."""

    name = "cityscapes"
    channels = 3

    def __init__(self, root: Path | None, **options) -> None:
        if root is None and os.environ.get(ENV_VAR):
            root = Path(os.environ[ENV_VAR])      # so adapter.root always names the tree actually used
        super().__init__(root, **options)

    @property
    def class_names(self) -> list[str]:
        return list(CATEGORIES)

    def scan(self) -> tuple[list[Case], list[str], list[str]]:
        """(cases with image and labels, errors that block loading, warnings: labels without an image)."""
        base = locate_root(self.root)
        errors: list[str] = []
        warnings: list[str] = []
        # gtFine/ normally sits beside leftImg8bit/ (both zips unpack into one folder); else look below the root
        gt_dirs = [] if (base / "gtFine").is_dir() else find_dirs(Path(self.root or base), "gtFine", max_depth=3)
        gt_base = gt_dirs[0].parent if gt_dirs else base
        cases: list[Case] = []
        seen: set[str] = set()
        for split in SPLITS:
            image_dir, label_dir = base / "leftImg8bit" / split, gt_base / "gtFine" / split
            images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
            for image_path in images:
                case_id = image_path.name[: -len(IMAGE_SUFFIX)]
                label_path = label_dir / image_path.parent.name / f"{case_id}{LABEL_SUFFIX}"
                if not label_path.is_file():
                    errors.append(f"{image_path}: no labels {label_path}")
                elif case_id in seen:
                    errors.append(f"{image_path}: frame {case_id} appears in more than one split")
                else:
                    seen.add(case_id)
                    cases.append(Case(case_id, split, partial(load_cityscapes_case, image_path, label_path)))
            image_ids = {p.name[: -len(IMAGE_SUFFIX)] for p in images}
            for label_path in sorted(label_dir.glob(f"*/*{LABEL_SUFFIX}")):
                if label_path.name[: -len(LABEL_SUFFIX)] not in image_ids:
                    warnings.append(f"{label_path}: labels without an image in {image_dir}")
        if not cases and not errors:
            errors.append(f"{base}: no frames found; expected {EXPECTED}")
        return sorted(cases, key=lambda c: c.case_id), errors, warnings
