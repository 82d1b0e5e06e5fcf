"""Datasets that need no download, in deepinv's dict format (``{"x": image}``)."""

from deepinv_ext.datasets.natural import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.datasets.phantoms import RandomEllipsesDataset, SheppLoganPhantomDataset, random_ellipses

__all__ = ["RandomEllipsesDataset", "SheppLoganPhantomDataset", "SkimageImagesDataset", "SKIMAGE_IMAGES",
           "random_ellipses"]
