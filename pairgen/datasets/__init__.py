"""Dataset adapters: one module per source, all registered in `base.REGISTRY`."""

from pairgen.datasets.base import REGISTRY, Case, DatasetAdapter, Sample, get_adapter

__all__ = ["REGISTRY", "Case", "DatasetAdapter", "Sample", "get_adapter"]
