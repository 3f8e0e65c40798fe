"""pairgen: learn a GAN over image+segmentation-mask pairs and export synthetic pairs as HDF5 shards."""

__version__ = "0.1.0"
