r"""Download-free phantom datasets: random ellipses and Shepp-Logan.

The random ellipses follow the shape model of :func:`deepinv.utils.phantoms.random_shapes` (itself that of ODL's
``ellipsoid_phantom`` as used by Adler & Öktem and by the spectral-PnP experiments of Hauptmann et al., 64x64), but
item ``i`` is drawn from its own generator seeded by ``(seed, i)``: it is the same on every call, in every
``DataLoader`` worker and in every process for given package versions, which deepinv's
:class:`deepinv.utils.RandomPhantomDataset` (global NumPy generator) does not guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from deepinv.utils.phantoms import generate_shepp_logan
from torch.utils.data import Dataset

from deepinv_ext._validation import boolean, finite_number, floating_dtype, positive_int
from deepinv_ext.datasets._checks import item_index

__all__ = ["random_ellipses", "RandomEllipsesDataset", "SheppLoganPhantomDataset"]


def _ellipse_arguments(size: int, mean_ellipses: float, interior: bool, texture: float) -> tuple[int, float, bool,
                                                                                                float]:
    """The shape arguments of :func:`random_ellipses`, checked."""
    return (positive_int(size, "size", minimum=2), finite_number(mean_ellipses, "mean_ellipses"),
            boolean(interior, "interior"), finite_number(texture, "texture"))


def random_ellipses(
    size: int, rng: np.random.Generator, mean_ellipses: float = 50.0, interior: bool = False, texture: float = 0.0
) -> torch.Tensor:
    r"""Draw one random ellipse phantom of shape ``(size, size)`` with values in :math:`[0, 1]`.

    The image is :math:`\mathrm{clip}_{[0,1]}\big(\sum_{k=1}^{N} a_k \mathbf{1}_{E_k}\big)` on :math:`[-1, 1]^2`
    with :math:`N \sim \mathrm{Poisson}(\text{mean\_ellipses})`, intensities
    :math:`a_k = (u - 1/2)\, e` (:math:`u \sim U[0,1]`, :math:`e \sim \mathrm{Exp}(0.4)`), semi-axes
    :math:`\sim 0.2\,\mathrm{Exp}(1)`, uniform centres and orientations.

    With ``texture`` :math:`= t > 0` the ellipses are no longer piecewise constant: ellipse :math:`k` carries the
    linear ramp :math:`a_k\,(1 + t\, g_k^\top u)`, where :math:`u \in` the unit disc is the point in the ellipse's own
    normalised coordinates and :math:`g_k \sim \mathcal{N}(0, I_2/2)`, so that the intensity varies by about
    :math:`\pm t\, a_k` across it. Smooth gradients are what TV penalises (staircasing) and a learned
    regulariser need not. The ramps are drawn after everything else: the shapes and intensities are the same for
    every ``texture``, and ``texture = 0`` gives the piecewise-constant phantoms exactly.

    :param int size: image side in pixels.
    :param numpy.random.Generator rng: the generator to draw from.
    :param float mean_ellipses: mean number of ellipses.
    :param bool interior: keep the centres in :math:`[-1/2, 1/2]^2` (default: :math:`[-1, 1]^2`).
    :param float texture: amplitude :math:`t \ge 0` of the linear intensity ramps inside the ellipses.
    :raises ValueError: ``size`` not an integer >= 2, ``mean_ellipses`` or ``texture`` negative or not finite.
    :raises TypeError: ``rng`` not a :class:`numpy.random.Generator`, ``interior`` not a bool.

    |sep|

    :Examples:

        The shapes and intensities do not depend on ``texture``: only the ramps inside the ellipses are added:

        >>> import numpy as np
        >>> from deepinv_ext.datasets import random_ellipses
        >>> flat = random_ellipses(64, np.random.default_rng(0))
        >>> ramps = random_ellipses(64, np.random.default_rng(0), texture=0.5)
        >>> flat.shape, bool(((flat > 0) == (ramps > 0)).float().mean() > 0.9)
        (torch.Size([64, 64]), True)
    """
    size, mean_ellipses, interior, texture = _ellipse_arguments(size, mean_ellipses, interior, texture)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got "
                        f"{type(rng).__name__}")
    n = rng.poisson(mean_ellipses)
    intensity = (rng.random(n) - 0.5) * rng.exponential(0.4, n)
    axes = rng.exponential(size=(n, 2)) * 0.2
    half_width = 0.5 if interior else 1.0
    centre = (2 * rng.random((n, 2)) - 1) * half_width
    theta = rng.random(n) * 2 * np.pi
    grid = np.linspace(-1.0, 1.0, size)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (dx * cos + dy * sin) / axes[:, 0, None, None]
    v = (-dx * sin + dy * cos) / axes[:, 1, None, None]
    inside = (u**2 + v**2 <= 1).astype(np.float64)
    if texture > 0:
        slope = rng.standard_normal((n, 2)) / np.sqrt(2)
        inside = inside * (1 + texture * (slope[:, 0, None, None] * u + slope[:, 1, None, None] * v))
    image = np.tensordot(intensity, inside, axes=1) if n else np.zeros((size, size))
    return torch.from_numpy(np.clip(image, 0.0, 1.0))


class RandomEllipsesDataset(Dataset):
    r"""Random ellipse phantoms, reproducible item by item, in deepinv's dict format.

    Item ``i`` is ``{"x": x_i}`` with ``x_i`` of shape ``(1, size, size)``, values in :math:`[0, 1]`, drawn by
    :func:`random_ellipses` from ``numpy.random.default_rng([seed, i])``.

    :param int length: number of phantoms.
    :param int size: image side in pixels (64 in the spectral-PnP paper).
    :param int seed: base seed; two datasets with different seeds are independent (use one for training, another
        for testing).
    :param float mean_ellipses: mean number of ellipses per phantom.
    :param bool interior: keep ellipse centres in the central half of the field of view.
    :param float texture: amplitude of linear intensity ramps inside the ellipses (0: piecewise constant); see
        :func:`random_ellipses`.
    :param torch.dtype dtype: dtype of the images (a real floating dtype).
    :param Callable transform: optional transform applied to each image.
    :raises ValueError: ``length`` not an integer >= 1, ``size`` not an integer >= 2, ``seed`` not an integer
        >= 0, ``mean_ellipses`` or ``texture`` negative or not finite.
    :raises TypeError: ``interior`` not a bool, ``dtype`` not a floating dtype, ``transform`` not callable.

    |sep|

    :Examples:

        Item 2 is the same whatever the order of access, and another seed gives other phantoms:

        >>> import torch
        >>> from deepinv_ext.datasets import RandomEllipsesDataset
        >>> data = RandomEllipsesDataset(length=4, size=64, seed=0)
        >>> data[2]["x"].shape
        torch.Size([1, 64, 64])
        >>> bool(torch.equal(data[2]["x"], RandomEllipsesDataset(length=4, size=64, seed=0)[2]["x"]))
        True
        >>> bool(torch.equal(data[2]["x"], RandomEllipsesDataset(length=4, size=64, seed=1)[2]["x"]))
        False
    """

    def __init__(
        self,
        length: int = 100,
        size: int = 64,
        seed: int = 0,
        mean_ellipses: float = 50.0,
        interior: bool = False,
        texture: float = 0.0,
        dtype: torch.dtype = torch.float32,
        transform: Callable | None = None,
    ):
        self.length = positive_int(length, "length")
        self.seed = positive_int(seed, "seed", minimum=0)
        self.size, self.mean_ellipses, self.interior, self.texture = _ellipse_arguments(size, mean_ellipses, interior,
                                                                                        texture)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be None or callable, got {type(transform).__name__}")
        self.dtype, self.transform = floating_dtype(dtype), transform

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_dataset`, its seed drawn from ``generator``
        (default: seeded with 0).

        :param torch.Generator generator: where the seed is drawn from.
        """
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        return {"dataset": cls(length=3, size=16, seed=int(torch.randint(0, 2**31, (1,), generator=g)))}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = item_index(index, self.length)
        rng = np.random.default_rng([self.seed, index])
        x = random_ellipses(self.size, rng, self.mean_ellipses, self.interior, self.texture).to(self.dtype)[None]
        if self.transform is not None:
            x = self.transform(x)
        return {"x": x}


class SheppLoganPhantomDataset(Dataset):
    r"""The Shepp-Logan phantom (deepinv's :func:`deepinv.utils.phantoms.generate_shepp_logan`) as a dataset.

    Item ``i`` is ``{"x": x}`` with ``x`` of shape ``(1, size, size)`` in :math:`[0, 1]`; all items are equal (use
    ``length > 1`` to fill a batch, e.g. with online measurements that draw fresh noise per item).

    :param int size: image side in pixels (>= 2).
    :param int length: number of (identical) items.
    :param torch.dtype dtype: dtype of the image (a real floating dtype).
    :raises ValueError: ``size`` not an integer >= 2, ``length`` not an integer >= 1.
    :raises TypeError: ``dtype`` not a floating dtype.

    |sep|

    :Examples:

        >>> from deepinv_ext.datasets import SheppLoganPhantomDataset
        >>> data = SheppLoganPhantomDataset(size=64, length=2)
        >>> len(data), data[1]["x"].shape, float(data[0]["x"].max())
        (2, torch.Size([1, 64, 64]), 1.0)
    """

    def __init__(self, size: int = 128, length: int = 1, dtype: torch.dtype = torch.float32):
        self.size = positive_int(size, "size", minimum=2)
        self.length = positive_int(length, "length")
        self.image = generate_shepp_logan(self.size).to(floating_dtype(dtype))[None]

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_dataset` (nothing is random: ``generator`` is
        accepted for the common signature and not used).

        :param torch.Generator generator: unused.
        """
        return {"dataset": cls(size=16, length=2)}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item_index(index, self.length)
        return {"x": self.image.clone()}
