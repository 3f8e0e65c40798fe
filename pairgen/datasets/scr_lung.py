"""`scr-lung`: JSRT chest radiographs with SCR structure masks (the thesis' "SCR Lung Database").

Images: JSRT `JPC{LN,NN}NNN` as the official headerless `.IMG` (2048², 12-bit big-endian, inverted to the usual
polarity, see imageio.read_jsrt_raw) or as PNG (any size). Both load in the usual polarity (air dark, bone
bright). PNG copies exist in both polarities (the dev copy in shared/data is air-BRIGHT, i.e. raw JSRT
polarity, despite its README), so option `png_polarity` is 'auto' by default: once per tree, the median over
up to 16 PNGs of (mediastinum - lung fields) decides; negative means air-bright and those PNGs are inverted.
Masks: SCR `<structure>/<case>.gif` (1024², values {0,255}) anywhere below the root: a flat `masks/` tree or the official `fold1/masks/…`,
`fold2/masks/…`. Files are found by searching the whole tree, so official folder names (`All247images/`, …)
need no configuration. Classes: background, then the chosen structures in the given order (later ones win
where structures overlap, e.g. heart over lung).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from pairgen.datasets.base import INPUT_SUFFIXES, Case, DatasetAdapter, Sample, register
from pairgen.core.images import read_image, read_label_image
from pairgen.datasets.imageio import check_values, files_below, read_jsrt_raw, require_root
from pairgen.core.errors import UserError

STRUCTURES = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
DEFAULT_STRUCTURES = ("left lung",)
CASE_PATTERN = re.compile(r"^JPC(LN|NN)\d{3}$", re.IGNORECASE)
IMAGE_SUFFIXES = (".img", ".png")
MASK_SUFFIXES = (".gif", ".png")
JSRT_SIDE = 2048            # the film is 2048 px at 0.175 mm/px whatever resolution a copy has
JSRT_SPACING_MM = 0.175
POLARITIES = ("auto", "usual", "inverted")
POLARITY_SAMPLE = 16
EXPECTED = "JSRT images (JPCLN001.IMG or JPCLN001.png …) and SCR masks (e.g. masks/left lung/JPCLN001.gif)"


def canonical_structure(name: str) -> str:
    """'Left_Lung', 'left-lung', 'left lung' → 'left lung' (folder names and CLI spellings vary)."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def parse_structures(structures: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Validated canonical structure names; () → ('left lung',)."""
    chosen = tuple(canonical_structure(s) for s in (structures or ())) or DEFAULT_STRUCTURES
    unknown = [s for s in chosen if s not in STRUCTURES]
    if unknown:
        raise UserError(f"--structures: unknown SCR structure(s) {unknown}; choose from {', '.join(STRUCTURES)}")
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--structures: {list(chosen)} names a structure twice")
    return chosen


def mask_spacing(rows: int, cols: int) -> tuple[float, float]:
    """(row, col) mm per pixel of a mask grid covering the whole 2048 px JSRT film (1024 → 0.35)."""
    return JSRT_SPACING_MM * JSRT_SIDE / rows, JSRT_SPACING_MM * JSRT_SIDE / cols


def mediastinum_contrast(image: np.ndarray) -> float:
    """Mean of the central strip minus the lateral lung fields (rows 30-60 %): > 0 in the usual polarity
    (mediastinum and spine bright, air-filled lungs dark), < 0 when air is bright."""
    rows, cols = image.shape[:2]
    band = image[int(0.3 * rows):int(0.6 * rows)]
    centre = band[:, int(0.45 * cols):int(0.55 * cols)].mean()
    lungs = (band[:, int(0.2 * cols):int(0.35 * cols)].mean() + band[:, int(0.65 * cols):int(0.8 * cols)].mean()) / 2
    return float(centre - lungs)


def png_tree_is_inverted(png_paths: list[Path]) -> bool:
    """True when the PNG copies are air-bright: median contrast over an even sample of up to 16 images < 0.
    One vote per tree, not per image: a single odd radiograph must not flip alone (dev copy: 247/247 agree)."""
    step = max(1, len(png_paths) // POLARITY_SAMPLE)
    contrasts = []
    for path in png_paths[::step][:POLARITY_SAMPLE]:
        try:
            contrasts.append(mediastinum_contrast(read_image(path, channels=1)[..., 0]))
        except UserError:
            continue   # unreadable files are reported when their case loads
    return bool(contrasts) and float(np.median(contrasts)) < 0


def read_radiograph(image_path: Path, invert_png: bool = False) -> np.ndarray:
    """One radiograph in the usual polarity → float32 H×W×1 in [0, 1]: a JSRT .IMG through read_jsrt_raw, any
    other image through the generic reader, inverted when `invert_png` (the tree's PNGs are air-bright)."""
    if image_path.suffix.lower() == ".img":
        return read_jsrt_raw(image_path)
    image = read_image(image_path, channels=1)
    return 1.0 - image if invert_png else image


def load_scr_case(image_path: Path, mask_paths: tuple[Path, ...], invert_png: bool = False) -> Sample:
    """Read one radiograph and its structure masks → Sample (image float32 H×W×1, mask uint8 ids 0..S)."""
    image = read_radiograph(image_path, invert_png)
    mask: np.ndarray | None = None
    for class_id, path in enumerate(mask_paths, start=1):
        binary = read_label_image(path)
        check_values(path, binary, (0, 1) if binary.max() <= 1 else (0, 255))
        if mask is None:
            mask = np.zeros(binary.shape, np.uint8)
        elif binary.shape != mask.shape:
            raise UserError(f"{path}: mask is {binary.shape[0]}x{binary.shape[1]}, "
                            f"{mask_paths[0].name} of the same case is {mask.shape[0]}x{mask.shape[1]}")
        mask[binary > 0] = class_id      # later structures overwrite earlier ones where they overlap
    assert mask is not None
    rows, cols = image.shape[:2]
    mask_rows, mask_cols = mask.shape
    # image and mask may differ in resolution (2048 or 512 vs 1024) but must cover the same square film
    if rows != cols or mask_rows != mask_cols:
        raise UserError(f"{image_path}: image {rows}x{cols} and mask {mask_rows}x{mask_cols} "
                        f"({mask_paths[0]}) must both be square")
    return Sample(image=image, mask=mask, spacing_mm=mask_spacing(mask_rows, mask_cols))


@register
class ScrLung(DatasetAdapter):
    """JSRT + SCR below `root`; option `structures` (default ('left lung',)) picks the classes 1..S,
    `png_polarity` ('auto' | 'usual' | 'inverted') says how PNG copies are stored."""

    name = "scr-lung"
    channels = 1
    unsafe_augmentations = {"flip": "a left-right flip turns the left lung into the right lung "
                                    "(docs/AUGMENTATION.md)"}
    input_suffixes = INPUT_SUFFIXES + (".img",)

    def __init__(self, root: Path | None, structures: tuple[str, ...] = (), png_polarity: str = "auto",
                 **options) -> None:
        super().__init__(root, **options)
        self.structures = parse_structures(structures)
        if png_polarity not in POLARITIES:
            raise UserError(f"png_polarity {png_polarity!r}: choose one of {', '.join(POLARITIES)}")
        self.png_polarity = png_polarity

    @property
    def class_names(self) -> list[str]:
        return ["background", *self.structures]

    def _inverts(self, pngs: list[Path]) -> bool:
        """Whether these PNGs (one tree, or one `segbench predict` call) are read inverted: png_polarity's rule."""
        return self.png_polarity == "inverted" or (self.png_polarity == "auto" and png_tree_is_inverted(pngs))

    def input_reader(self, paths: list[Path], channels: int) -> Callable[[Path], np.ndarray]:
        """Radiographs as `load_scr_case` reads them; the polarity of the PNGs among `paths` voted once."""
        return partial(read_radiograph, invert_png=self._inverts(sorted(p for p in paths
                                                                        if p.suffix.lower() == ".png")))

    def _index(self) -> tuple[dict[str, Path], dict[str, dict[str, Path]], list[str]]:
        """(case → image, selected structure → case → mask, duplicate problems) from one walk of the tree."""
        root = require_root(self.root, self.name, EXPECTED)
        problems: list[str] = []
        images: dict[str, Path] = {}
        masks: dict[str, dict[str, Path]] = {s: {} for s in self.structures}
        for path in files_below(root, IMAGE_SUFFIXES + MASK_SUFFIXES):
            structure = canonical_structure(path.parent.name)
            case = path.stem.upper()
            if structure in STRUCTURES:   # a mask folder: never an image, even for .png
                if structure not in self.structures or path.suffix.lower() not in MASK_SUFFIXES:
                    continue
                table = masks[structure]
            elif CASE_PATTERN.match(path.stem) and path.suffix.lower() in IMAGE_SUFFIXES:
                table = images
            else:
                continue
            if case in table:
                problems.append(f"{path}: case {case} also found at {table[case]} (keep one copy below the root)")
            else:
                table[case] = path
        return images, masks, problems

    def scan(self) -> tuple[list[Case], list[str], list[str]]:
        """(cases with image and all masks, errors that block loading, warnings such as masks without image)."""
        images, masks, errors = self._index()
        warnings: list[str] = []
        if not images:
            errors.append(f"{self.root}: no JSRT images found below this folder; expected {EXPECTED}")
        pngs = sorted(p for p in images.values() if p.suffix.lower() == ".png")
        invert_png = self._inverts(pngs)
        cases = []
        for case, image_path in sorted(images.items()):
            missing = [s for s in self.structures if case not in masks[s]]
            if missing:
                wanted = ", ".join(f"{s}/{case}.gif" for s in missing)
                errors.append(f"{image_path}: no mask {wanted} below {self.root}")
                continue
            mask_paths = tuple(masks[s][case] for s in self.structures)
            cases.append(Case(case, "all", partial(load_scr_case, image_path, mask_paths, invert_png)))
        for structure in self.structures:
            for case, mask_path in sorted(masks[structure].items()):
                if case not in images:
                    warnings.append(f"{mask_path}: mask without an image {case}.IMG/.png below {self.root}")
        return cases, errors, warnings
