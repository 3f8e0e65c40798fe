"""Dataset adapters: one module per source, all registered in `base.REGISTRY` on import."""

from pairgen.datasets import camvid, cityscapes, folder, scr_lung, shapes  # noqa: F401  (register adapters)
from pairgen.datasets.base import REGISTRY, Case, DatasetAdapter, Sample, get_adapter

__all__ = ["REGISTRY", "Case", "DatasetAdapter", "Sample", "get_adapter"]
