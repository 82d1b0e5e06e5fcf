r"""Random non-Cartesian k-space trajectories (radial, spiral) for MRI training, as deepinv physics generators.

Both generators draw one random rotation of a fixed trajectory per sample (``random_rotation=True``), which is how a
fixed readout design is randomised over a training set. The trajectories are SigPy's
(:mod:`deepinv_ext.physics.functional.trajectories`: radial spokes, variable-density spirals). The Pipe-Menon density
compensation of a rotated trajectory is the rotated one's up to interpolation error (the analytic radial weights are
exactly invariant), so the generators compute the weights (:mod:`deepinv_ext.physics.functional.density`) once, for
the unrotated trajectory, and return them under the key ``"dcf"`` beside ``"trajectory"`` (the buffer names of
:class:`deepinv_ext.physics.SigpyMultiCoilMRI`), which saves the physics from recomputing them on every update.

Cartesian masks come from deepinv itself: :class:`deepinv.physics.generator.EquispacedMaskGenerator` and
:class:`deepinv.physics.generator.RandomMaskGenerator`.
"""

from __future__ import annotations

import math

import torch
from deepinv.physics.generator import PhysicsGenerator

from deepinv_ext._validation import boolean, checked_device, int_pair, positive_int
from deepinv_ext.physics._checks import check_rng, real_dtype
from deepinv_ext.physics.functional.density import pipe_menon_dcf, radial_dcf
from deepinv_ext.physics.functional.trajectories import radial_trajectory, spiral_trajectory

__all__ = ["RadialTrajectoryGenerator", "SpiralTrajectoryGenerator"]


class _TrajectoryGenerator(PhysicsGenerator):
    """Shared part: a fixed base trajectory, one random rotation per sample, Pipe-Menon weights computed once."""

    _EXAMPLE: dict = {}  # the design of the contract example's 8x8 trajectory (keywords of the subclass)

    def __init__(self, base: torch.Tensor, img_size: tuple[int, int], random_rotation: bool,
                 dcf: torch.Tensor | None, rng: torch.Generator | None, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        device = checked_device(device)
        check_rng(rng)
        super().__init__(rng=rng, device=device, dtype=real_dtype(dtype))
        self.img_size = int_pair(img_size, "img_size", minimum=2)
        self.random_rotation = boolean(random_rotation, "random_rotation")
        self.base = base.to(device=device, dtype=dtype)
        self.base_dcf = None if dcf is None else dcf[0].to(device=device, dtype=dtype)

    def step(self, batch_size: int = 1, seed: int | None = None, **kwargs) -> dict:
        r"""Draw ``batch_size`` trajectories.

        :param int batch_size: number of samples :math:`B`, an integer >= 1.
        :param int seed: optional seed to re-seed the generator.
        :return: ``{"trajectory": (B, K, 2)}`` and, with ``dcf=True``, ``"dcf": (B, K)``.
        :raises ValueError: ``batch_size`` is not an integer >= 1 (the physics take no empty trajectory batch).
        """
        batch_size = positive_int(batch_size, "batch_size")
        self.rng_manual_seed(seed)
        k = self.base.expand(batch_size, *self.base.shape)
        if self.random_rotation:
            theta = 2 * math.pi * torch.rand(batch_size, generator=self.rng, **self.factory_kwargs)
            c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
            # all radii are <= min(H, W)/2, so a rotated trajectory stays inside the sampled rectangle
            k = torch.stack([c * k[..., 0] - s * k[..., 1], s * k[..., 0] + c * k[..., 1]], dim=-1)
        out = {"trajectory": k.contiguous()}
        if self.base_dcf is not None:
            out["dcf"] = self.base_dcf.expand(batch_size, -1).contiguous()
        return out

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """An 8x8, 2-coil :class:`~deepinv_ext.physics.SigpyMultiCoilMRI` whose trajectory the generator drew (one
        shared by the batch, see :meth:`~deepinv_ext.physics.SigpyMultiCoilMRI.contract_example`) and float64
        images, for :func:`deepinv_ext.testing.check_physics` (side-effect free: draws only from ``generator``)."""
        from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI
        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        trajectories = cls((8, 8), dcf=False, rng=g, dtype=torch.float64, **cls._EXAMPLE)
        x = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)
        maps = SigpyMultiCoilMRI.birdcage_maps(2, (8, 8), dtype=torch.complex128)
        physics = SigpyMultiCoilMRI(maps, trajectory=trajectories.base.to(torch.float64), dcf=None)
        physics.update(**trajectories.step(batch_size=1))
        return {"physics": physics, "x": x}


class RadialTrajectoryGenerator(_TrajectoryGenerator):
    r"""Radial trajectories (:func:`~deepinv_ext.physics.functional.radial_trajectory`), rotated at random per sample.

    Sample :math:`b` gets the fixed trajectory :math:`k` rotated by a uniform random angle,

    .. math:: k^{(b)}_i = R(\alpha_b)\, k_i, \qquad \alpha_b \sim \mathcal{U}[0, 2\pi),

    and, with ``dcf``, the analytic density compensation of :math:`k` (invariant under rotation), computed once.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_spokes: spokes :math:`J` (acceleration :math:`\pi\min(H,W)/(2J)`).
    :param int n_readout: samples per spoke (default :math:`2\min(H, W)`).
    :param bool golden_angle: golden-angle spoke order instead of uniform angles.
    :param bool random_rotation: rotate each sample's trajectory by a uniform random angle.
    :param bool dcf: also return density compensation weights (analytic ramp, :func:`~deepinv_ext.physics.functional.radial_dcf`).
    :param torch.Generator rng: random generator, on ``device``.
    :param str, torch.device device: device of the trajectories.
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``.
    :raises TypeError: a flag that is not a bool, an ``rng`` that is not a generator, another ``dtype``.
    :raises ValueError: a size or count that is not an integer in range, a missing CUDA device.

    |sep|

    :Examples:

        Two rotated copies of 16 spokes of 64 samples, every sample at the same radius as in the fixed trajectory:

        >>> from deepinv_ext.physics import RadialTrajectoryGenerator
        >>> gen = RadialTrajectoryGenerator((32, 32), n_spokes=16, dcf=False)
        >>> k = gen.step(batch_size=2, seed=0)["trajectory"]
        >>> k.shape
        torch.Size([2, 1024, 2])
        >>> bool(torch.allclose(k.norm(dim=-1), gen.base.norm(dim=-1).expand(2, -1), atol=1e-4))
        True
    """

    _EXAMPLE = {"n_spokes": 6, "n_readout": 12}

    def __init__(self, img_size: tuple[int, int], n_spokes: int, n_readout: int | None = None,
                 golden_angle: bool = False, random_rotation: bool = True, dcf: bool = True,
                 rng: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        base = radial_trajectory(img_size, n_spokes, n_readout, golden_angle)
        n_readout = 2 * min(int_pair(img_size, "img_size", minimum=2)) if n_readout is None else n_readout
        weights = radial_dcf(base, img_size, n_readout) if boolean(dcf, "dcf") else None
        super().__init__(base, img_size, random_rotation, weights, rng, device, dtype)
        self.n_spokes = n_spokes


class SpiralTrajectoryGenerator(_TrajectoryGenerator):
    r"""Spiral trajectories (:func:`~deepinv_ext.physics.functional.spiral_trajectory`), rotated at random per sample.

    Sample :math:`b` gets the fixed spiral :math:`k` rotated as :math:`k^{(b)}_i = R(\alpha_b)\, k_i`,
    :math:`\alpha_b \sim \mathcal{U}[0, 2\pi)`, and, with ``dcf``, the Pipe-Menon weights of :math:`k`
    :footcite:p:`pipe1999sampling`, computed once (those of a rotated spiral differ only by interpolation error).

    :param tuple img_size: image size ``(H, W)``.
    :param int n_interleaves: interleaves :math:`J`.
    :param float n_turns: turns per interleaf :math:`T` (Nyquist at :math:`TJ \geq \min(H,W)/2` for
        :math:`\alpha = 1`).
    :param int n_samples: samples per interleaf.
    :param float alpha: density exponent (1: uniform density).
    :param bool random_rotation: rotate each sample's trajectory by a uniform random angle.
    :param bool dcf: also return Pipe-Menon weights (computed once).
    :param torch.Generator rng: random generator, on ``device``.
    :param str, torch.device device: device of the trajectories.
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``.
    :raises TypeError: a flag that is not a bool, a number that is not one, an ``rng`` that is not a generator,
        another ``dtype``.
    :raises ValueError: a count not an integer in range, ``n_turns``/``alpha`` out of range, a missing CUDA device.

    |sep|

    :Examples:

        >>> from deepinv_ext.physics import SpiralTrajectoryGenerator
        >>> gen = SpiralTrajectoryGenerator((32, 32), n_interleaves=4, n_turns=4, n_samples=100, dcf=False)
        >>> gen.step(batch_size=2, seed=0)["trajectory"].shape
        torch.Size([2, 400, 2])
    """

    _EXAMPLE = {"n_interleaves": 3, "n_turns": 2, "n_samples": 24}

    def __init__(self, img_size: tuple[int, int], n_interleaves: int, n_turns: float = 8.0,
                 n_samples: int | None = None, alpha: float = 1.0, random_rotation: bool = True,
                 dcf: bool = True, rng: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        base = spiral_trajectory(img_size, n_interleaves, n_turns, n_samples, alpha)
        weights = pipe_menon_dcf(base, img_size) if boolean(dcf, "dcf") else None
        super().__init__(base, img_size, random_rotation, weights, rng, device, dtype)
        self.n_interleaves = n_interleaves
