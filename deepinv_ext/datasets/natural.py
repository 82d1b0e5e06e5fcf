r"""A small natural-image dataset from the images bundled with scikit-image (no download)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from deepinv_ext._validation import boolean, floating_dtype, positive_int
from deepinv_ext.datasets._checks import item_index

__all__ = ["SKIMAGE_IMAGES", "SkimageImagesDataset"]

#: Images shipped inside the scikit-image wheel (``skimage/data``), so they load without a network.
SKIMAGE_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "coins", "moon", "page", "text", "rocket", "grass",
                  "gravel", "brick", "cell", "hubble_deep_field", "retina", "immunohistochemistry", "horse", "clock")


def _load(name: str, grayscale: bool) -> torch.Tensor:
    import skimage.data
    from skimage.color import gray2rgb, rgb2gray
    from skimage.util import img_as_float

    image = img_as_float(getattr(skimage.data, name)())
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if grayscale and image.ndim == 3:
        image = rgb2gray(image)
    if not grayscale and image.ndim == 2:
        image = gray2rgb(image)
    image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(image))


class SkimageImagesDataset(Dataset):
    r"""Natural images from scikit-image's bundled data, centre-cropped and resized, in deepinv's dict format.

    Item ``i`` is ``{"x": x}`` with ``x`` of shape ``(C, size, size)`` in :math:`[0, 1]` (``C = 1`` for grayscale,
    3 for colour): the largest centred square of the image, resized with antialiasing.

    :param int size: side of the returned images.
    :param bool grayscale: convert colour images to gray (default) or gray images to RGB.
    :param tuple[str] names: which images (default: all of :data:`SKIMAGE_IMAGES`; at least one).
    :param torch.dtype dtype: dtype of the images (a real floating dtype).
    :raises ValueError: ``size`` not an integer >= 2, ``names`` empty or naming an image not in
        :data:`SKIMAGE_IMAGES`.
    :raises TypeError: ``names`` not a tuple (e.g. a single string), ``grayscale`` not a bool, ``dtype`` not a
        floating dtype.

    |sep|

    :Examples:

        >>> from deepinv_ext.datasets import SkimageImagesDataset
        >>> data = SkimageImagesDataset(size=64, names=("camera", "astronaut"))
        >>> len(data), data[1]["x"].shape
        (2, torch.Size([1, 64, 64]))
        >>> bool(data[0]["x"].min() >= 0 and data[0]["x"].max() <= 1)
        True
    """

    def __init__(self, size: int = 128, grayscale: bool = True, names: tuple[str, ...] | None = None,
                 dtype: torch.dtype = torch.float32):
        if names is not None and not isinstance(names, (tuple, list)):
            raise TypeError(f"names must be a tuple of image names, e.g. ('camera',), got {type(names).__name__} "
                            f"{names!r}")
        names = tuple(SKIMAGE_IMAGES if names is None else names)
        unknown = [n for n in names if n not in SKIMAGE_IMAGES]
        if unknown or not names:
            raise ValueError(f"names must hold at least one of {SKIMAGE_IMAGES}, got {names!r}"
                             + (f" (unknown: {unknown})" if unknown else ""))
        self.size = positive_int(size, "size", minimum=2)
        self.grayscale, self.names, self.dtype = boolean(grayscale, "grayscale"), names, floating_dtype(dtype)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_dataset` (nothing is random: ``generator`` is
        accepted for the common signature and not used).

        :param torch.Generator generator: unused.
        """
        return {"dataset": cls(size=16, names=("camera", "astronaut"))}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from torchvision.transforms.functional import center_crop, resize

        image = _load(self.names[item_index(index, len(self.names))], self.grayscale)
        side = min(image.shape[-2:])
        image = resize(center_crop(image, [side, side]), [self.size, self.size], antialias=True)
        return {"x": image.clamp(0, 1).to(self.dtype)}
