r"""Small, side-effect-free building blocks for ``contract_example()`` methods.

A plugin's ``contract_example(generator=None)`` builds a tiny instance of itself and the inputs of the check of its
kind. It must not touch the global random state (a test suite that runs it must not change what other tests draw)
and must not need any dataset module (so that algorithms, denoisers and losses do not depend on
:mod:`deepinv_ext.datasets`). This module gives it the two things it needs: a seeded generator, a context that builds
randomly initialised modules from that generator without touching the global state, and a few smooth test images.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from deepinv_ext._validation import floating_dtype, positive_int

DEFAULT_SEED = 0


def example_generator(generator: torch.Generator | None = None) -> torch.Generator:
    r"""The generator a ``contract_example`` draws from: ``generator`` itself, or a new CPU one seeded with 0.

    :param torch.Generator generator: a CPU generator, or ``None``.
    :raises TypeError: ``generator`` is neither ``None`` nor a :class:`torch.Generator`.

    |sep|

    :Examples:

        A ``contract_example`` draws its inputs from it, so that two calls give the same example:

        >>> import torch
        >>> from deepinv_ext.testing import example_generator
        >>> def contract_example(generator=None):
        ...     g = example_generator(generator)
        ...     return {"x": torch.rand(2, 1, 8, 8, generator=g)}
        >>> bool(torch.equal(contract_example()["x"], contract_example()["x"]))
        True
    """
    if generator is None:
        return torch.Generator().manual_seed(DEFAULT_SEED)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


@contextlib.contextmanager
def seeded_init(generator: torch.Generator) -> Iterator[None]:
    r"""Build randomly initialised modules from ``generator`` without changing the global random state.

    PyTorch's layer constructors draw their initial weights from the global CPU generator and take no
    ``generator`` argument. Inside this context the global CPU generator is seeded from one draw of ``generator``
    and restored on exit (:func:`torch.random.fork_rng`), so the weights depend on ``generator`` alone and the
    caller's random stream is left as it was.

    :param torch.Generator generator: where the seed comes from (one draw is consumed).

    |sep|

    :Examples:

        The weights depend on the generator alone, and the global random stream is left as it was:

        >>> import torch
        >>> from deepinv_ext.testing import example_generator, seeded_init
        >>> state = torch.random.get_rng_state()
        >>> with seeded_init(example_generator()):
        ...     first = torch.nn.Conv2d(1, 2, 3)
        >>> with seeded_init(example_generator()):
        ...     second = torch.nn.Conv2d(1, 2, 3)
        >>> bool(torch.equal(first.weight, second.weight)), bool(torch.equal(torch.random.get_rng_state(), state))
        (True, True)
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=example_generator(generator)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ExampleImages(Dataset):
    r"""A handful of smooth images with a few edges, in :math:`[0, 1]`, as deepinv dict items ``{"x": x}``.

    Each image is a sum of random Gaussian bumps plus one bright rectangle, drawn once from ``generator``: piecewise
    smooth like the phantoms and photographs the methods are made for, small enough for a contract check.

    :param int length: number of images.
    :param int size: image side in pixels (>= 4).
    :param int channels: channels of each image.
    :param torch.Generator generator: where the images are drawn from (default: seeded with 0).
    :param torch.dtype dtype: a real floating dtype.
    """

    def __init__(self, length: int, size: int, channels: int = 1, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        length, size = positive_int(length, "length"), positive_int(size, "size", minimum=4)
        channels = positive_int(channels, "channels")
        g = example_generator(generator)
        grid = torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        centres = torch.rand(length, channels, 4, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
        widths = torch.rand(length, channels, 4, 1, 1, generator=g, dtype=torch.float64) * 0.3 + 0.15
        dist = (xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2
        images = torch.exp(-dist / (2 * widths**2)).sum(dim=2)
        corners = torch.randint(0, size // 2, (length, 2), generator=g)
        for i, (r, c) in enumerate(corners.tolist()):
            images[i, :, r : r + size // 3, c : c + size // 3] += 1.0
        images = images - images.amin(dim=(-2, -1), keepdim=True)
        self.images = (images / images.amax(dim=(-2, -1), keepdim=True)).to(floating_dtype(dtype))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.images[index].clone()}


def example_images(length: int, size: int, channels: int = 1, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> ExampleImages:
    r"""A handful of smooth images with a few edges, in :math:`[0, 1]`, as deepinv dict items ``{"x": x}``
    (:class:`ExampleImages`): each a sum of four random Gaussian bumps plus one bright square, rescaled to
    :math:`[0, 1]`, drawn once from ``generator``.

    :param int length: number of images.
    :param int size: image side in pixels (>= 4).
    :param int channels: channels of each image.
    :param torch.Generator generator: where the images are drawn from (default: seeded with 0).
    :param torch.dtype dtype: a real floating dtype.

    |sep|

    :Examples:

        >>> from deepinv_ext.testing import example_images
        >>> images = example_images(3, 16, channels=2)
        >>> len(images), images[0]["x"].shape
        (3, torch.Size([2, 16, 16]))
        >>> x = images[1]["x"]
        >>> float(x.amin()), float(x.amax())
        (0.0, 1.0)
    """
    return ExampleImages(length, size, channels, generator=generator, dtype=dtype)


def example_blur(size: int, noise: float) -> Any:
    r"""The measurement of an algorithm's contract example: :class:`deepinv.physics.BlurFFT` with a Gaussian kernel
    of standard deviation 1 pixel on ``(1, size, size)`` images, and Gaussian noise of standard deviation ``noise``.

    :param int size: image side.
    :param float noise: noise standard deviation (the noise is drawn when the physics is called: call it under
        :func:`seeded_init` to keep the global stream untouched).
    """
    import deepinv as dinv

    kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    return dinv.physics.BlurFFT((1, size, size), filter=kernel, noise_model=dinv.physics.GaussianNoise(noise))


def declared_example(obj: Any, generator: torch.Generator | None = None) -> dict:
    r"""Call ``obj.contract_example``, passing ``generator`` when the method accepts one.

    Third-party plugins written before the ``generator`` argument existed declare ``contract_example()``
    without it; they are called as they are.

    :param obj: a plugin class or object.
    :param torch.Generator generator: passed on (default: a new generator seeded with 0).
    :raises AssertionError: ``obj`` declares no ``contract_example``.
    """
    declared: Callable | None = getattr(obj, "contract_example", None)
    assert callable(declared), f"{obj!r} declares no contract_example(): the registry cannot check it"
    if "generator" in inspect.signature(declared).parameters:
        return declared(generator=example_generator(generator))
    return declared()
