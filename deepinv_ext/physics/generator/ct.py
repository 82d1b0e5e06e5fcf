r"""Random view subsets for CT training, as a deepinv physics generator: :class:`RandomViewsGenerator`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from deepinv.physics.generator import PhysicsGenerator

from deepinv_ext._validation import checked_device, positive_int
from deepinv_ext.physics._checks import check_rng, view_angles

__all__ = ["RandomViewsGenerator"]


class RandomViewsGenerator(PhysicsGenerator):
    r"""Draw ``n_views`` of a full set of CT views at random for every sample (compact sinograms of ``n_views``).

    With :math:`\phi_1 < \dots < \phi_n` the full views, each :meth:`step` draws for sample :math:`b` the views

    .. math:: \theta_b = (\phi_{i_1}, \dots, \phi_{i_m}), \qquad \{i_1 < \dots < i_m\} \sim
        \mathcal{U}\big(\{S \subset \{1, \dots, n\} : |S| = m\}\big),

    a uniformly random subset of :math:`m` = ``n_views`` views (without replacement, independent between samples),
    returned as ``{"angles": theta}`` of shape ``(B, n_views)``, in degrees, for :meth:`deepinv_ext.physics.AstraCT.update_parameters`. This is deepinv's convention for generator
    parameters (a leading batch dimension, one parameter per sample), so that
    ``deepinv.Trainer(online_measurements=True, physics_generator=generator)`` trains on a new angular
    undersampling for every image, and :func:`deepinv.datasets.generate_dataset` stores each sample's views
    beside its sinogram (loaded back by :class:`deepinv.datasets.HDF5Dataset` with
    ``load_physics_generator_params=True`` for offline training). ``step(batch_size=1)`` gives ``(1, n_views)``,
    which :class:`~deepinv_ext.physics.AstraCT` shares over any batch.

    With :class:`~deepinv_ext.physics.AstraCT`'s sparse backend, the drawn views are rows of the system matrix
    of ``full_angles``, which is built (or loaded from the disk cache) once: per-sample views project onto all the
    full views in one batched product and keep each sample's rows; the ASTRA backend makes one projector per
    sample instead. Give the physics the same full set of views as the generator
    (``AstraCT(size, angles=full_angles)``).

    :param int, Sequence[float], torch.Tensor full_angles: the full set of views (a count means that many views
        spread uniformly over :math:`[0, 180)` degrees, as :class:`AstraCT`'s parallel-beam default), or an
        :class:`AstraCT` whose ``full_angles`` to use.
    :param int n_views: views drawn per sample, ``1 <= n_views <= len(full_angles)``.
    :param torch.Generator rng: random generator (default: a new one), on ``device``.
    :param str device: device of the generated angles.
    :raises TypeError: ``full_angles`` is a float or holds no real numbers, ``rng`` is not a generator.
    :raises ValueError: ``full_angles`` is empty or not finite, ``n_views`` out of range, a missing CUDA device.

    |sep|

    :Examples:

        Four samples, each with its own 30 of 180 views, projected in one call:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, RandomViewsGenerator
        >>> physics = AstraCT(16, angles=180, backend="sparse", cache_dir=None)
        >>> generator = RandomViewsGenerator(physics, n_views=30)
        >>> params = generator.step(batch_size=4, seed=0)
        >>> params["angles"].shape
        torch.Size([4, 30])
        >>> physics.A(torch.rand(4, 1, 16, 16), **params).shape
        torch.Size([4, 1, 30, 23])
    """

    def __init__(self, full_angles: int | Sequence[float] | torch.Tensor | Any, n_views: int,
                 rng: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        device = checked_device(device)
        check_rng(rng)
        super().__init__(rng=rng, device=device, dtype=torch.float64)
        if hasattr(full_angles, "full_angles"):
            full_angles = full_angles.full_angles
        full = view_angles(full_angles, 180.0, "full_angles")
        if isinstance(n_views, bool) or not isinstance(n_views, int) or not 1 <= n_views <= full.numel():
            raise ValueError(f"n_views must be an int in [1, {full.numel()}], got {n_views!r}")
        self.register_buffer("full_angles", full.to(device))
        self.n_views = n_views

    def step(self, batch_size: int = 1, seed: int | None = None, **kwargs: Any) -> dict:
        r"""Draw one subset of views per sample.

        :param int batch_size: number of samples :math:`B`, an integer >= 1.
        :param int seed: seed of the random generator for this draw.
        :param kwargs: ignored (deepinv's signature of ``step``).
        :return: ``{"angles": tensor (B, n_views) of angles in degrees, each row sorted}``.
        :raises ValueError: ``batch_size`` is not an integer >= 1 (an empty draw could not be given to
            :class:`AstraCT`, which needs at least one set of views).
        """
        batch_size = positive_int(batch_size, "batch_size")
        self.rng_manual_seed(seed)
        keys = torch.rand(batch_size, self.full_angles.numel(), generator=self.rng, device=self.rng.device)
        index = keys.argsort(dim=1)[:, : self.n_views].sort(dim=1).values.to(self.full_angles.device)
        return {"angles": self.full_angles[index]}

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """An :class:`~deepinv_ext.physics.AstraCT` (float64) whose views the generator drew, for
        :func:`deepinv_ext.testing.check_physics` (side-effect free: draws only from ``generator``).

        One draw shared by the batch: the contract compares the batch with per-sample calls, which cannot hold
        for per-sample views (each single image would meet every set of views).

        :param torch.Generator generator: where the images and the views are drawn from (default: seeded with 0).
        """
        from deepinv_ext.physics.astra_ct import AstraCT
        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        x = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64)
        physics = AstraCT(10, angles=24, backend="sparse", cache_dir=None)
        views = cls(physics, n_views=8, rng=g)
        physics.update(**views.step(batch_size=1))  # (1, n_views): shared, see check_physics
        return {"physics": physics, "x": x}
