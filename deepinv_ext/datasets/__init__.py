"""Datasets that need no download, in deepinv's dict format (``{"x": image}``): phantoms, scikit-image's shipped
images, and any folder of test images (e.g. CBSD68 and its gray version BSD68)."""

from deepinv_ext.datasets.folder import (
           GRAY_CONVERSIONS,
           MATLAB_WEIGHTS,
           ImageFolderDataset,
           bt601_luma,
           matlab_luma,
)
from deepinv_ext.datasets.natural import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.datasets.phantoms import RandomEllipsesDataset, SheppLoganPhantomDataset, random_ellipses

__all__ = ["GRAY_CONVERSIONS", "ImageFolderDataset", "MATLAB_WEIGHTS", "RandomEllipsesDataset",
           "SheppLoganPhantomDataset", "SkimageImagesDataset", "SKIMAGE_IMAGES", "bt601_luma", "matlab_luma",
           "random_ellipses"]
