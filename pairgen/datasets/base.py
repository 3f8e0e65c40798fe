"""The one small interface every dataset adapter implements, and the registry the CLIs look names up in.

An adapter turns a dataset tree on disk (or a procedure, for `shapes`) into `Case`s. Each case loads lazily into a
`Sample`: the image at its native resolution and the mask at the resolution metrics are computed at (they may
differ: JSRT images are 2048 px, SCR masks 1024 px). Resizing to the training resolution happens in
`pairgen.prepare`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import Callable, ClassVar

import numpy as np

# what `segbench predict` accepts as input images unless an adapter reads more (SCR: JSRT .IMG)
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    image: np.ndarray                    # float32 H×W×C in [0, 1], C = 1 (gray) or 3 (RGB)
    mask: np.ndarray                     # uint8 h×w class ids, 0 = background/void; h×w may differ from H×W
    spacing_mm: tuple[float, float] | None  # (row, col) spacing of the *mask* grid, None when unknown


@dataclass(frozen=True)
class Case:
    case_id: str                  # unique within the dataset (file stem)
    source_split: str             # the distribution's own split: 'train', 'val', 'test' or 'all'
    load: Callable[[], Sample]    # reads the files; raises UserError naming the file on bad input


class DatasetAdapter:
    """Base class: subclasses set `name`, `channels`, and implement `class_names` and `cases`."""

    name: ClassVar[str]
    channels: ClassVar[int]          # image channels: 1 or 3
    needs_root: ClassVar[bool] = True
    # augmentations that change what a label means here: op name (segbench.augment.AugSpec field) -> why;
    # `segbench run` refuses them unless --allow-unsafe-aug
    unsafe_augmentations: ClassVar[dict[str, str]] = {}
    input_suffixes: ClassVar[tuple[str, ...]] = INPUT_SUFFIXES   # files `segbench predict` picks from a folder

    def __init__(self, root: Path | None, **options) -> None:
        self.root = Path(root) if root is not None else None
        self.options = options

    @property
    def class_names(self) -> list[str]:
        """Index = class id in the masks; index 0 is background (or 'void')."""
        raise NotImplementedError

    def scan(self) -> tuple[list[Case], list[str], list[str]]:
        """(cases sorted by case_id, errors, warnings): every problem of the tree, for `prepare --check`."""
        raise NotImplementedError

    def input_reader(self, paths: list[Path], channels: int) -> Callable[[Path], np.ndarray]:
        """How one of `paths` (images given to `segbench predict`, outside any tree) reads as this dataset's cases
        read for training: path → float32 H×W×channels in [0, 1]. All paths come at once so that a decision the
        adapter makes per tree (SCR's PNG polarity) is made once per call. Default: the generic reader."""
        from pairgen.core.images import read_image

        return partial(read_image, channels=channels)

    def cases(self) -> list[Case]:
        """All cases found below the root, sorted by case_id. Raises UserError (the first problem) otherwise."""
        from pairgen.datasets.imageio import first_problem

        cases, errors, _ = self.scan()
        if errors:
            raise first_problem(errors, self.name)
        return cases


REGISTRY: dict[str, type[DatasetAdapter]] = {}


def register(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    REGISTRY[cls.name] = cls
    return cls
