"""Every dataset adapter by name: importing this module imports each adapter module, which registers itself
(base.register) in base.REGISTRY. Callers look adapters up here, never through the package."""

from __future__ import annotations

from pathlib import Path

from pairgen.core.errors import UserError
from pairgen.datasets import camvid, cityscapes, folder, scr_lung, shapes  # noqa: F401  (register the adapters)
from pairgen.datasets.base import REGISTRY, DatasetAdapter


def get_adapter(name: str, root: Path | None = None, **options) -> DatasetAdapter:
    """Instantiate the adapter registered under `name`."""
    if name not in REGISTRY:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](root, **options)


def unsafe_augmentations_of(name: str) -> dict[str, str]:
    """The augmentations dataset `name` declares unsafe (op name -> reason); {} for an unknown name."""
    cls = REGISTRY.get(name)
    return dict(cls.unsafe_augmentations) if cls is not None else {}


def input_adapter(name: str | None) -> DatasetAdapter:
    """The adapter `segbench predict` reads a run's inputs through (input_suffixes, input_reader): dataset `name`
    with the options `pairgen prepare` gives it (its defaults), the generic base for an unknown or missing name."""
    cls = REGISTRY.get(name) if name else None
    return cls(None) if cls is not None else DatasetAdapter(None)
