r"""A folder of test images (e.g. CBSD68, or its gray version BSD68), in deepinv's dict format (``{"x": image}``)."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch
from deepinv.datasets import ImageFolder
from natsort import natsorted
from torchvision.datasets.folder import IMG_EXTENSIONS

from deepinv_ext._validation import floating_dtype
from deepinv_ext.datasets._checks import item_index

__all__ = ["GRAY_CONVERSIONS", "ImageFolderDataset", "MATLAB_WEIGHTS", "bt601_luma", "matlab_luma"]

#: MATLAB's ``rgb2gray`` weights: the first row of the inverse of the NTSC (YIQ) matrix, BT.601's weights unrounded.
MATLAB_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def _rgb_channels(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``R, G, B`` of an 8-bit integer tensor ``(..., 3, H, W)`` as int64, after the checks of :func:`bt601_luma`."""
    if not isinstance(rgb, torch.Tensor) or rgb.dtype.is_floating_point or rgb.dtype.is_complex or rgb.dtype == torch.bool:
        raise TypeError(f"rgb must be an integer tensor of 8-bit values, got {getattr(rgb, 'dtype', type(rgb).__name__)}")
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must have shape (..., 3, H, W), got {tuple(rgb.shape)}")
    if rgb.numel() and not (0 <= int(rgb.min()) and int(rgb.max()) <= 255):
        raise ValueError(f"rgb must hold values in 0..255, got {int(rgb.min())}..{int(rgb.max())}")
    return rgb.to(torch.int64).unbind(-3)


def bt601_luma(rgb: torch.Tensor) -> torch.Tensor:
    r"""ITU-R BT.601 luma of 8-bit RGB, rounded to 8 bits: :math:`Y = \lfloor 0.299 R + 0.587 G + 0.114 B + 0.5
    \rfloor`, computed exactly in integers (ties round up).

    The weights are BT.601's :footcite:p:`itu2011bt601`.

    This is the textbook conversion of the colour CBSD68 :footcite:p:`martin2001database` to the classic gray BSD68
    test set :footcite:p:`roth2009fields`; the gray BSD68 that
    circulates (e.g. DnCNN's) was made by MATLAB's ``rgb2gray``, whose unrounded weights (:func:`matlab_luma`) differ
    from these on about 0.005% of its pixels, by one gray level. It is *not* ``skimage.color.rgb2gray``, which uses
    the Rec. 709 weights :math:`0.2125, 0.7154, 0.0721` in floating point.

    :param torch.Tensor rgb: integer tensor of shape ``(..., 3, H, W)`` with values in ``0..255``.
    :return: integer tensor of shape ``(..., 1, H, W)`` in ``0..255`` (``torch.int64``).
    :raises TypeError: ``rgb`` is not an integer tensor.
    :raises ValueError: ``rgb`` has no channel dimension of size 3 at ``-3`` or values outside ``0..255``.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.datasets import bt601_luma
        >>> bt601_luma(torch.tensor([[[100]], [[150]], [[200]]])).flatten().tolist()  # 29.9 + 88.05 + 22.8 = 140.75
        [141]
    """
    r, g, b = _rgb_channels(rgb)
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).unsqueeze(-3)


def matlab_luma(rgb: torch.Tensor) -> torch.Tensor:
    r"""MATLAB's ``rgb2gray`` of 8-bit RGB: :math:`Y = \lfloor w_R R + w_G G + w_B B + 0.5\rfloor` with the
    unrounded weights :data:`MATLAB_WEIGHTS`, in float64.

    The gray BSD68 of DnCNN's distribution (``testsets/BSD68`` of cszn/DnCNN) is this conversion of CBSD68, pixel for
    pixel on all 68 images (checked once against a copy of that repository); :func:`bt601_luma` differs from it on
    about 0.005% of the pixels, by one gray level.

    :param torch.Tensor rgb: integer tensor of shape ``(..., 3, H, W)`` with values in ``0..255``.
    :return: integer tensor of shape ``(..., 1, H, W)`` in ``0..255`` (``torch.int64``).
    :raises TypeError: ``rgb`` is not an integer tensor.
    :raises ValueError: ``rgb`` has no channel dimension of size 3 at ``-3`` or values outside ``0..255``.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.datasets import bt601_luma, matlab_luma
        >>> rgb = torch.tensor([[[0]], [[112]], [[182]]])  # 86.4920 with BT.601's weights, 86.5006 with MATLAB's
        >>> bt601_luma(rgb).item(), matlab_luma(rgb).item()
        (86, 87)
    """
    r, g, b = (c.double() for c in _rgb_channels(rgb))
    w_r, w_g, w_b = MATLAB_WEIGHTS
    return torch.floor(w_r * r + w_g * g + w_b * b + 0.5).long().unsqueeze(-3)


#: The rounded lumas of :class:`ImageFolderDataset`, by ``gray``.
_LUMA = {"bt601": bt601_luma, "matlab": matlab_luma}

#: The gray conversions of :class:`ImageFolderDataset` (``None`` keeps the colour).
GRAY_CONVERSIONS = (*_LUMA, "mean")


class ImageFolderDataset(ImageFolder):
    r"""The image files of a folder, as images in :math:`[0, 1]` in deepinv's dict format, in colour or gray.

    A :class:`deepinv.datasets.ImageFolder` (its file search and loading: every file with an image extension under
    ``root``, sub-folders included, or those matching ``pattern``; images are read as 8-bit RGB) whose items are
    ``{"x": x}`` with ``x`` of shape ``(C, H, W)``, in natural file-name order (``2.png`` before ``10.png``), and
    with one of these conversions of the 8-bit RGB values :math:`(R, G, B)`:

    - ``gray=None``: colour, :math:`x = (R, G, B)/255`, ``C = 3`` (a gray file gives three equal channels);
    - ``gray="bt601"``: :math:`x = \lfloor 0.299R + 0.587G + 0.114B + 0.5\rfloor / 255` (:func:`bt601_luma`),
      ``C = 1``: the ITU-R BT.601 luma :footcite:p:`itu2011bt601` rounded to 8 bits, the textbook conversion of the
      colour CBSD68 :footcite:p:`martin2001database` to the gray BSD68 test set :footcite:p:`roth2009fields`;
    - ``gray="matlab"``: the same with MATLAB's unrounded weights (:func:`matlab_luma`), ``C = 1``: the gray BSD68
      that circulates (DnCNN's), pixel for pixel;
    - ``gray="mean"``: :math:`x = (R + G + B)/(3 \cdot 255)`, not rounded, ``C = 1``: the conversion of the TDV
      authors' demo script :footcite:p:`kobler2020total` (``VLOGroup/tdv``).

    It works with :func:`deepinv.test` and :class:`deepinv.Trainer` (through a ``DataLoader``; images of different
    sizes need ``batch_size=1``).

    :param str, pathlib.Path root: the folder.
    :param str gray: ``None`` (colour), ``"bt601"``, ``"matlab"`` or ``"mean"`` (see above).
    :param str pattern: a glob relative to ``root`` choosing the files (e.g. ``"*.png"``; default: every file with
        one of torchvision's image extensions, ``.png``, ``.jpg``, ..., under ``root``).
    :param torch.dtype dtype: dtype of the images (a real floating dtype).
    :raises FileNotFoundError: ``root`` is not a folder, or it holds no image file (or none matches ``pattern``).
    :raises ValueError: ``gray`` is not ``None`` or one of :data:`GRAY_CONVERSIONS`.
    :raises TypeError: ``dtype`` is not a floating dtype.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from PIL import Image
        >>> from deepinv_ext.datasets import ImageFolderDataset
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.full((4, 5, 3), (100, 150, 200), dtype=np.uint8)).save(folder / "a.png")
        >>> data = ImageFolderDataset(folder, gray="bt601")
        >>> x = data[0]["x"]
        >>> x.shape, round(float(x[0, 0, 0]) * 255)
        (torch.Size([1, 4, 5]), 141)
        >>> ImageFolderDataset(folder)[0]["x"].shape
        torch.Size([3, 4, 5])
    """

    def __init__(self, root: str | Path, gray: str | None = None, pattern: str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        if gray is not None and gray not in GRAY_CONVERSIONS:
            raise ValueError(f"gray must be None (colour) or one of {GRAY_CONVERSIONS}, got {gray!r}")
        if pattern is not None and not isinstance(pattern, str):
            raise TypeError(f"pattern must be a glob string such as '*.png', got {type(pattern).__name__}")
        self.gray, self.dtype = gray, floating_dtype(dtype)
        if not Path(root).is_dir():
            raise FileNotFoundError(f"root {str(root)!r}: no such folder of images")
        super().__init__(root, x_path=pattern, transform=self.to_tensor, use_dict_output=True)
        # deepinv's default search globs once per extension, in the file system's order: sort the union
        self.x_paths = natsorted({p for p in self.x_paths if p.is_file()})
        if not self.x_paths:
            found = f"matching {pattern!r}" if pattern else f"with an extension in {', '.join(IMG_EXTENSIONS)}"
            raise FileNotFoundError(f"root {str(root)!r} holds no image file {found}")

    def to_tensor(self, image) -> torch.Tensor:
        """The 8-bit RGB image as the ``(C, H, W)`` tensor of the dataset's conversion (``gray``) and ``dtype``.

        :param PIL.Image.Image, numpy.ndarray image: a PIL image or an ``(H, W, 3)`` array of 8-bit values.
        """
        rgb = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        if self.gray in _LUMA:
            x = _LUMA[self.gray](rgb).double() / 255
        elif self.gray == "mean":
            x = (rgb.double() / 255).mean(0, keepdim=True)
        else:
            x = rgb.double() / 255
        return x.to(self.dtype)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return super().__getitem__(item_index(index, len(self)))

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_dataset`: two random 12x10 RGB PNGs drawn from
        ``generator`` in a temporary folder (removed with the dataset), converted with BT.601.

        :param torch.Generator generator: where the pixels are drawn from (default: seeded with 0).
        """
        from PIL import Image

        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        folder = Path(tempfile.mkdtemp(prefix="image_folder_"))
        for name in ("0.png", "1.png"):
            pixels = torch.randint(0, 256, (12, 10, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / name)
        dataset = cls(folder, gray="bt601")
        weakref.finalize(dataset, shutil.rmtree, folder, ignore_errors=True)
        return {"dataset": dataset}
