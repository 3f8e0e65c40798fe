"""segbench: train a U-Net on any mix of real and synthetic pairs and report thesis-style tables."""

__version__ = "0.1.0"
