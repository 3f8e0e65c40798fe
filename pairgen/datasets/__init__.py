"""Dataset adapters: base.py (Sample, Case, DatasetAdapter), one module per source, registry.py (lookup by name)."""
