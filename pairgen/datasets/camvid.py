"""`camvid`: CamVid road scenes in the SegNet layout, an open stand-in for Cityscapes.

Layout (found anywhere below `root`): `train/` + `trainannot/`, `val/` + `valannot/`, optional `test/` +
`testannot/`, 480×360 RGB PNGs and 8-bit label PNGs (ids 0..10, 11 = Unlabelled). Optional `train.txt`,
`val.txt`, `test.txt` list the pairs with paths starting `/SegNet/CamVid/`; we resolve them by file name only.

Classes: `categories=True` (default) maps onto the 8 Cityscapes categories so camvid and cityscapes share
class ids; `categories=False` keeps the 11 native classes as ids 1..11 with void (Unlabelled) as id 0,
because class 0 is background/void everywhere in this toolkit.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pairgen.datasets.base import Case, DatasetAdapter, Sample, register
from pairgen.datasets.cityscapes import CATEGORIES
from pairgen.core.images import read_image, read_label_image
from pairgen.datasets.imageio import check_values, find_dirs, require_root
from pairgen.core.errors import UserError

NATIVE_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
VOID_ID = 11
SPLITS = ("train", "val", "test")
EXPECTED = "train/ + trainannot/ and val/ + valannot/ (SegNet CamVid layout)"

# native CamVid id → Cityscapes category (data README); Unlabelled → void
TO_CATEGORY = {"Sky": "sky", "Building": "construction", "Pole": "object", "Road": "flat", "Pavement": "flat",
               "Tree": "nature", "SignSymbol": "object", "Fence": "construction", "Car": "vehicle",
               "Pedestrian": "human", "Bicyclist": "human"}


def label_lut(categories: bool) -> np.ndarray:
    """uint8[12]: native label id → class id (category ids, or native+1 with void = 0)."""
    lut = np.zeros(VOID_ID + 1, np.uint8)
    for native_id, name in enumerate(NATIVE_CLASSES):
        lut[native_id] = CATEGORIES.index(TO_CATEGORY[name]) if categories else native_id + 1
    lut[VOID_ID] = 0
    return lut


def load_camvid_case(image_path: Path, label_path: Path, lut: np.ndarray) -> Sample:
    """Read one frame → Sample (image float32 H×W×3, mask uint8 class ids, spacing unknown)."""
    image = read_image(image_path, channels=3)
    labels = read_label_image(label_path)
    check_values(label_path, labels, range(len(lut)))
    if labels.shape != image.shape[:2]:
        raise UserError(f"{label_path}: labels are {labels.shape[0]}x{labels.shape[1]}, "
                        f"the image {image_path.name} is {image.shape[0]}x{image.shape[1]}")
    return Sample(image=image, mask=lut[labels], spacing_mm=None)


def listed_names(list_file: Path) -> list[tuple[str, str]]:
    """(image file name, label file name) per non-empty line of a SegNet list; directories are ignored."""
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{list_file}:{number}: expected '<image path> <label path>', got {line.strip()!r}")
        pairs.append((Path(parts[0]).name, Path(parts[1]).name))
    return pairs


@register
class CamVid(DatasetAdapter):
    """SegNet CamVid; option `categories` (default True) selects the 8 Cityscapes categories."""

    name = "camvid"
    channels = 3

    def __init__(self, root: Path | None, categories: bool = True, **options) -> None:
        super().__init__(root, **options)
        self.categories = bool(categories)
        self.lut = label_lut(self.categories)

    @property
    def class_names(self) -> list[str]:
        return list(CATEGORIES) if self.categories else ["void", *NATIVE_CLASSES]

    def _base(self) -> Path:
        root = require_root(self.root, self.name, EXPECTED)
        found = [d.parent for d in find_dirs(root, "trainannot", max_depth=4) if (d.parent / "train").is_dir()]
        if not found:
            raise UserError(f"{root}: no train/ + trainannot/ folders at or below it; expected {EXPECTED}")
        if len(found) > 1:
            raise UserError(f"{root}: several CamVid trees ({', '.join(map(str, found[:3]))}); pass one as --root")
        return found[0]

    def _pairs(self, base: Path, split: str, errors: list[str], warnings: list[str]) -> list[tuple[Path, Path]]:
        """(image, label) paths of one split: from `<split>.txt` when present, else by matching file names."""
        image_dir, label_dir = base / split, base / f"{split}annot"
        list_file = base / f"{split}.txt"
        if list_file.is_file():
            pairs = [(image_dir / a, label_dir / b) for a, b in listed_names(list_file)]
            for image_path, label_path in pairs:
                for path in (image_path, label_path):
                    if not path.is_file():
                        errors.append(f"{path}: listed in {list_file.name} but missing")
            listed = {p.name for p, _ in pairs}
            warnings.extend(f"{p}: not listed in {list_file.name}; ignored"
                            for p in sorted(image_dir.glob("*.png")) if p.name not in listed)
            return [(a, b) for a, b in pairs if a.is_file() and b.is_file()]
        if not image_dir.is_dir():
            return []
        images = sorted(image_dir.glob("*.png"))
        labels = {p.name for p in label_dir.glob("*.png")} if label_dir.is_dir() else set()
        pairs = []
        for image_path in images:
            if image_path.name in labels:
                pairs.append((image_path, label_dir / image_path.name))
            else:
                errors.append(f"{image_path}: no labels {label_dir / image_path.name}")
        names = {p.name for p in images}
        warnings.extend(f"{label_dir / n}: labels without an image in {image_dir}" for n in sorted(labels - names))
        return pairs

    def scan(self) -> tuple[list[Case], list[str], list[str]]:
        """(cases, errors that block loading, warnings) over train/val/test."""
        base = self._base()
        errors: list[str] = []
        warnings: list[str] = []
        cases: dict[str, Case] = {}
        for split in SPLITS:
            for image_path, label_path in self._pairs(base, split, errors, warnings):
                case_id = image_path.stem
                if case_id in cases:
                    errors.append(f"{image_path}: frame {case_id} also in split {cases[case_id].source_split!r}")
                    continue
                cases[case_id] = Case(case_id, split, partial(load_camvid_case, image_path, label_path, self.lut))
        if not cases and not errors:
            errors.append(f"{base}: no frames found; expected {EXPECTED}")
        return [cases[k] for k in sorted(cases)], errors, warnings
