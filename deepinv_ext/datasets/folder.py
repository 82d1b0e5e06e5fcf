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

__all__ = ["GRAY_CONVERSIONS", "ImageFolderDataset", "bt601_luma"]

#: The gray conversions of :class:`ImageFolderDataset` (``None`` keeps the colour).
GRAY_CONVERSIONS = ("bt601", "mean")


def bt601_luma(rgb: torch.Tensor) -> torch.Tensor:
    r"""ITU-R BT.601 luma of 8-bit RGB, rounded to 8 bits: :math:`Y = \lfloor 0.299 R + 0.587 G + 0.114 B + 0.5
    \rfloor`, computed exactly in integers (ties round up, as MATLAB's ``rgb2gray`` and PIL's ``convert("L")`` do).

    This is the conversion of the classic gray BSD68 test set (from the colour CBSD68). It is *not*
    ``skimage.color.rgb2gray``, which uses the Rec. 709 weights :math:`0.2125, 0.7154, 0.0721` in floating point.

    :param torch.Tensor rgb: integer tensor of shape ``(..., 3, H, W)`` with values in ``0..255``.
    :return: integer tensor of shape ``(..., 1, H, W)`` in ``0..255`` (``torch.int64``).
    :raises TypeError: ``rgb`` is not an integer tensor.
    :raises ValueError: ``rgb`` has no channel dimension of size 3 at ``-3`` or values outside ``0..255``.

    References: ITU-R Recommendation BT.601, *Studio encoding parameters of digital television for standard 4:3
    and wide-screen 16:9 aspect ratios* (the luma weights); S. Roth, M. J. Black, "Fields of Experts", IJCV 2009
    (the 68 gray test images of BSDS300 known as BSD68).

    :Examples:

    >>> bt601_luma(torch.tensor([[[100]], [[150]], [[200]]])).flatten().tolist()  # 29.9 + 88.05 + 22.8 = 140.75
    [141]
    """
    if not isinstance(rgb, torch.Tensor) or rgb.dtype.is_floating_point or rgb.dtype.is_complex or rgb.dtype == torch.bool:
        raise TypeError(f"rgb must be an integer tensor of 8-bit values, got {getattr(rgb, 'dtype', type(rgb).__name__)}")
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must have shape (..., 3, H, W), got {tuple(rgb.shape)}")
    if rgb.numel() and not (0 <= int(rgb.min()) and int(rgb.max()) <= 255):
        raise ValueError(f"rgb must hold values in 0..255, got {int(rgb.min())}..{int(rgb.max())}")
    r, g, b = rgb.to(torch.int64).unbind(-3)
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).unsqueeze(-3)


class ImageFolderDataset(ImageFolder):
    r"""The image files of a folder, as images in :math:`[0, 1]` in deepinv's dict format, in colour or gray.

    A :class:`deepinv.datasets.ImageFolder` (its file search and loading: every file with an image extension under
    ``root``, sub-folders included, or those matching ``pattern``; images are read as 8-bit RGB) whose items are
    ``{"x": x}`` with ``x`` of shape ``(C, H, W)``, in natural file-name order (``2.png`` before ``10.png``), and
    with one of these conversions of the 8-bit RGB values :math:`(R, G, B)`:

    - ``gray=None``: colour, :math:`x = (R, G, B)/255`, ``C = 3`` (a gray file gives three equal channels);
    - ``gray="bt601"``: :math:`x = \lfloor 0.299R + 0.587G + 0.114B + 0.5\rfloor / 255` (:func:`bt601_luma`),
      ``C = 1``: the ITU-R BT.601 luma rounded to 8 bits, which makes the classic gray BSD68 test set from the
      colour CBSD68;
    - ``gray="mean"``: :math:`x = (R + G + B)/(3 \cdot 255)`, not rounded, ``C = 1``: the conversion of the TDV
      authors' demo script.

    It works with :func:`deepinv.test` and :class:`deepinv.Trainer` (through a ``DataLoader``; images of different
    sizes need ``batch_size=1``).

    :param root: the folder.
    :param str gray: ``None`` (colour), ``"bt601"`` or ``"mean"`` (see above).
    :param str pattern: a glob relative to ``root`` choosing the files (e.g. ``"*.png"``; default: every file with
        one of torchvision's image extensions, ``.png``, ``.jpg``, ..., under ``root``).
    :param torch.dtype dtype: dtype of the images (a real floating dtype).
    :raises FileNotFoundError: ``root`` is not a folder, or it holds no image file (or none matches ``pattern``).
    :raises ValueError: ``gray`` is not ``None``, ``"bt601"`` or ``"mean"``.
    :raises TypeError: ``dtype`` is not a floating dtype.

    References: D. Martin, C. Fowlkes, D. Tal, J. Malik, "A database of human segmented natural images ...", ICCV
    2001 (BSDS300, whose 68 test images are CBSD68); E. Kobler, A. Effland, K. Kunisch, T. Pock, "Total Deep
    Variation for Linear Inverse Problems", CVPR 2020 (the channel mean of their code, ``VLOGroup/tdv``).

    :Examples:

    >>> import tempfile
    >>> from PIL import Image
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
            raise ValueError(f"gray must be None (colour), 'bt601' or 'mean', got {gray!r}")
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
        """The 8-bit RGB image (a PIL image or an ``(H, W, 3)`` array) as the ``(C, H, W)`` tensor of the class's
        conversion."""
        rgb = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        if self.gray == "bt601":
            x = bt601_luma(rgb).double() / 255
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
        ``generator`` in a temporary folder (removed with the dataset), converted with BT.601."""
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
