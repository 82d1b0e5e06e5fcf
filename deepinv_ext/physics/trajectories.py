r"""Non-Cartesian k-space trajectories (radial, spiral) as deepinv physics generators, and Pipe-Menon density
compensation.

Trajectories follow SigPy's convention: a tensor ``(B, K, 2)`` of ``K`` k-space locations per sample, in cycles per
field of view, so that coordinate ``k[..., d]`` lies in :math:`[-n_d/2, n_d/2]` for an image of size
:math:`(n_0, n_1) = (H, W)`; ``k[..., 0]`` runs along the image rows (H) and ``k[..., 1]`` along the columns (W).
On a Cartesian grid these are the indices of deepinv's centred FFT minus :math:`n_d/2`. (deepinv's
:class:`deepinv.physics.NonCartesianMRI` and mri-nufft use :math:`[-1/2, 1/2)` instead: divide by the image size.)

Both generators draw one random rotation of the whole trajectory per sample (``random_rotation=True``), which is
how a fixed readout design is randomised over a training set. The Pipe-Menon density compensation of a rotated
trajectory is the rotated one's up to interpolation error (the analytic radial weights are exactly invariant), so
the generators compute the weights once, for the unrotated trajectory, and return it under the key ``"dcf"`` beside ``"trajectory"`` (the buffer names of
:class:`deepinv_ext.physics.SigpyMultiCoilMRI`), which saves the physics from recomputing it on every update.

Cartesian masks come from deepinv itself: :class:`deepinv.physics.generator.EquispacedMaskGenerator` and
:class:`deepinv.physics.generator.RandomMaskGenerator`.

References: J. G. Pipe and P. Menon, "Sampling density compensation in MRI: rationale and an iterative numerical
solution", MRM 41(1), 1999; S. Winkelmann et al., "An optimal radial profile order based on the golden ratio for
time-resolved MRI", IEEE TMI 26(1), 2007.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from deepinv.physics.generator import PhysicsGenerator

from deepinv_ext._validation import boolean, checked_device, finite_number, int_pair, positive_int
from deepinv_ext.physics._checks import check_rng, checked_trajectory, real_dtype

__all__ = ["pipe_menon_dcf", "radial_dcf", "radial_trajectory", "spiral_trajectory", "RadialTrajectoryGenerator",
           "SpiralTrajectoryGenerator"]

GOLDEN_ANGLE = math.pi / ((1.0 + math.sqrt(5.0)) / 2.0)  # 180 deg / golden ratio = 111.246 deg


def _check_size(img_size: tuple[int, int]) -> tuple[int, int]:
    return int_pair(img_size, "img_size", minimum=2)


def radial_trajectory(img_size: tuple[int, int], n_spokes: int, n_readout: int | None = None,
                      golden_angle: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Radial spokes through the k-space centre, ``(n_spokes * n_readout, 2)``.

    Spoke :math:`j` has angle :math:`\theta_j = j\pi/J` (uniform over :math:`[0, \pi)`) or :math:`j\,\pi/\phi`
    (golden angle, :math:`\phi` the golden ratio); its samples are :math:`r\,(\cos\theta_j, \sin\theta_j)` with
    :math:`n_{ro}` radii equispaced in :math:`[-n/2, n/2)`, :math:`n = \min(H, W)`, so that the centre is sampled.
    Nyquist sampling of the rim needs :math:`J \geq \pi n / 2` spokes; the acceleration is
    :math:`\pi n / (2J)`.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_spokes: number of spokes :math:`J`.
    :param int n_readout: samples per spoke (default :math:`2\min(H, W)`, two-fold readout oversampling).
    :param bool golden_angle: golden-angle instead of uniform angles.
    :raises ValueError: a size or count that is not an integer in range (a float is refused, not truncated).
    :raises TypeError: ``golden_angle`` is not a bool, ``dtype`` not float32 or float64.
    """
    h, w = _check_size(img_size)
    n_spokes = positive_int(n_spokes, "n_spokes")
    boolean(golden_angle, "golden_angle")
    real_dtype(dtype)
    n = min(h, w)
    n_readout = 2 * n if n_readout is None else positive_int(n_readout, "n_readout", minimum=2)
    j = torch.arange(n_spokes, dtype=torch.float64)
    theta = j * GOLDEN_ANGLE if golden_angle else j * math.pi / n_spokes
    r = (torch.arange(n_readout, dtype=torch.float64) - n_readout // 2) * (n / n_readout)
    k = torch.stack([r[None] * torch.cos(theta)[:, None], r[None] * torch.sin(theta)[:, None]], dim=-1)
    return k.reshape(-1, 2).to(dtype)


def spiral_trajectory(img_size: tuple[int, int], n_interleaves: int, n_turns: float = 8.0,
                      n_samples: int | None = None, alpha: float = 1.0,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Variable-density Archimedean spiral interleaves, ``(n_interleaves * n_samples, 2)``.

    Interleaf :math:`j` is :math:`k_j(t) = \tfrac n2\, t^{\alpha} \left(\cos(2\pi T t + \varphi_j),
    \sin(2\pi T t + \varphi_j)\right)`, :math:`t \in [0, 1]`, with :math:`T` turns and
    :math:`\varphi_j = 2\pi j/J`. :math:`\alpha = 1` is the uniform-density Archimedean spiral (radial spacing
    :math:`n / (2T)` within an interleaf, :math:`n/(2TJ)` over all of them: Nyquist needs :math:`TJ \geq n/2`);
    :math:`\alpha > 1` samples the centre more densely.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_interleaves: number of interleaves :math:`J`.
    :param float n_turns: turns per interleaf :math:`T`.
    :param int n_samples: samples per interleaf (default :math:`4 T n`, enough for the arc length).
    :param float alpha: density exponent :math:`\alpha \geq 1`.
    :raises ValueError: a count that is not an integer in range (``n_samples >= 2``), ``n_turns`` not finite and
        positive, ``alpha`` not finite and >= 1.
    :raises TypeError: ``n_turns`` or ``alpha`` is not a number, ``dtype`` not float32 or float64.
    """
    h, w = _check_size(img_size)
    n_interleaves = positive_int(n_interleaves, "n_interleaves")
    n_turns = finite_number(n_turns, "n_turns", strict=True)
    alpha = finite_number(alpha, "alpha", minimum=1.0)
    real_dtype(dtype)
    n = min(h, w)
    n_samples = max(2, int(4 * n_turns * n)) if n_samples is None else positive_int(n_samples, "n_samples", minimum=2)
    t = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
    radius = (n / 2) * (1 - 1e-6) * t**alpha
    phi = 2 * math.pi * torch.arange(n_interleaves, dtype=torch.float64) / n_interleaves
    angle = 2 * math.pi * n_turns * t[None] + phi[:, None]
    k = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return k.reshape(-1, 2).to(dtype)


def _blob_scaled(weights: np.ndarray, coord: np.ndarray, img_size: tuple[int, int]) -> np.ndarray:
    """Rescale density weights so that F^H D F reproduces a centred Gaussian of width n/8 (least squares)."""
    import sigpy as sp

    h, w = img_size
    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    blob = np.exp(-(yy**2 + xx**2) / (2 * (min(h, w) / 8) ** 2)).astype(np.complex128)
    z = sp.nufft_adjoint(weights * sp.nufft(blob, coord), coord, (h, w))
    return weights * float(np.vdot(z, blob).real / np.vdot(z, z).real)


def pipe_menon_dcf(trajectory: torch.Tensor, img_size: tuple[int, int], max_iter: int = 30) -> torch.Tensor:
    r"""Pipe-Menon density compensation weights :math:`d`, ``(B, K)`` for a trajectory ``(B, K, 2)`` or ``(K, 2)``.

    SigPy's :func:`sigpy.mri.pipe_menon_dcf` iterates :math:`d \leftarrow d / (G G^H d)` with a gridding kernel
    :math:`G`; its scale is arbitrary, so the weights are then rescaled so that the density-compensated adjoint
    :math:`F^H D F` (SigPy's unitary-scaled NUFFT :math:`F`) reproduces a smooth test image (a centred Gaussian of
    width :math:`n/8`) in the least-squares sense: :math:`F^H D y` is then directly a (zero-filled) image
    estimate. Runs per trajectory on the CPU (SigPy), the loop inside. SigPy's iteration converges slowly: on a
    Nyquist-sampled radial trajectory the density-compensated adjoint of that test image is off by 14% after 30
    iterations, 8% after 100; :func:`radial_dcf` (1.6%) is better for radial trajectories.

    :param torch.Tensor trajectory: k-space locations, SigPy convention (see the module docstring).
    :param tuple img_size: image size ``(H, W)``.
    :param int max_iter: Pipe-Menon iterations.
    """
    import sigpy.mri as mr

    h, w = _check_size(img_size)
    coords = checked_trajectory(trajectory, (h, w))
    max_iter = positive_int(max_iter, "max_iter")
    out = []
    for coord in coords.detach().cpu().to(torch.float64).numpy():
        d = np.abs(mr.pipe_menon_dcf(coord, (h, w), max_iter=max_iter, show_pbar=False))
        out.append(torch.from_numpy(_blob_scaled(d, coord, (h, w))))
    return torch.stack(out).to(device=trajectory.device, dtype=trajectory.dtype)


def radial_dcf(trajectory: torch.Tensor, img_size: tuple[int, int], n_readout: int) -> torch.Tensor:
    r"""Analytic (ramp) density compensation of a radial trajectory from :func:`radial_trajectory`, ``(B, K)``.

    A sample at radius :math:`r > 0` represents the area :math:`r\,\Delta r\,\pi/J`, the centre sample of
    each spoke :math:`\pi (\Delta r/2)^2 / J`, i.e. :math:`d \propto r` with :math:`d_0 = \Delta r/4`
    (:math:`\Delta r = \min(H, W)/n_{ro}`), rescaled as in :func:`pipe_menon_dcf`.
    """
    h, w = _check_size(img_size)
    coords = checked_trajectory(trajectory, (h, w))
    dr = min(h, w) / positive_int(n_readout, "n_readout", minimum=2)
    out = []
    for coord in coords.detach().cpu().to(torch.float64).numpy():
        r = np.linalg.norm(coord, axis=-1)
        d = np.where(r < 1e-3 * dr, dr / 4, r)
        out.append(torch.from_numpy(_blob_scaled(d, coord, (h, w))))
    return torch.stack(out).to(device=trajectory.device, dtype=trajectory.dtype)


class _TrajectoryGenerator(PhysicsGenerator):
    """Shared part: a fixed base trajectory, one random rotation per sample, Pipe-Menon weights computed once."""

    def __init__(self, base: torch.Tensor, img_size: tuple[int, int], random_rotation: bool,
                 dcf: torch.Tensor | None, rng: torch.Generator | None, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        device = checked_device(device)
        check_rng(rng)
        super().__init__(rng=rng, device=device, dtype=real_dtype(dtype))
        self.img_size = _check_size(img_size)
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
    def _contract(cls, generator: _TrajectoryGenerator) -> dict:
        from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI

        maps = SigpyMultiCoilMRI.birdcage_maps(2, generator.img_size, dtype=torch.complex128)
        physics = SigpyMultiCoilMRI(maps, trajectory=generator.base.to(torch.float64), dcf=None)
        physics.update(**generator.step(batch_size=1, seed=0))  # shared: see SigpyMultiCoilMRI.contract_example
        x = torch.randn(2, 2, *generator.img_size, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        return {"physics": physics, "x": x}


class RadialTrajectoryGenerator(_TrajectoryGenerator):
    r"""Radial trajectories (see :func:`radial_trajectory`), rotated at random per sample.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_spokes: spokes :math:`J` (acceleration :math:`\pi\min(H,W)/(2J)`).
    :param int n_readout: samples per spoke (default :math:`2\min(H, W)`).
    :param bool golden_angle: golden-angle spoke order instead of uniform angles.
    :param bool random_rotation: rotate each sample's trajectory by a uniform random angle.
    :param bool dcf: also return density compensation weights (analytic ramp, :func:`radial_dcf`).
    :param torch.Generator rng: random generator, on ``device``.
    :param str, torch.device device: device of the trajectories.
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``.
    :raises TypeError: a flag that is not a bool, an ``rng`` that is not a generator, another ``dtype``.
    :raises ValueError: a size or count that is not an integer in range, a missing CUDA device.

    :Examples:

    >>> gen = RadialTrajectoryGenerator((32, 32), n_spokes=16, dcf=False)
    >>> gen.step(batch_size=2, seed=0)["trajectory"].shape
    torch.Size([2, 1024, 2])
    """

    def __init__(self, img_size: tuple[int, int], n_spokes: int, n_readout: int | None = None,
                 golden_angle: bool = False, random_rotation: bool = True, dcf: bool = True,
                 rng: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        base = radial_trajectory(img_size, n_spokes, n_readout, golden_angle)
        n_readout = 2 * min(_check_size(img_size)) if n_readout is None else n_readout
        weights = radial_dcf(base, img_size, n_readout) if boolean(dcf, "dcf") else None
        super().__init__(base, img_size, random_rotation, weights, rng, device, dtype)
        self.n_spokes = n_spokes

    @classmethod
    def contract_example(cls) -> dict:
        """The physics contract on an 8x8, 2-coil radial :class:`SigpyMultiCoilMRI` drawn by the generator."""
        return cls._contract(cls((8, 8), n_spokes=6, n_readout=12, dcf=False, dtype=torch.float64))


class SpiralTrajectoryGenerator(_TrajectoryGenerator):
    r"""Spiral trajectories (see :func:`spiral_trajectory`), rotated at random per sample.

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
    """

    def __init__(self, img_size: tuple[int, int], n_interleaves: int, n_turns: float = 8.0,
                 n_samples: int | None = None, alpha: float = 1.0, random_rotation: bool = True,
                 dcf: bool = True, rng: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        base = spiral_trajectory(img_size, n_interleaves, n_turns, n_samples, alpha)
        weights = pipe_menon_dcf(base, img_size) if boolean(dcf, "dcf") else None
        super().__init__(base, img_size, random_rotation, weights, rng, device, dtype)
        self.n_interleaves = n_interleaves

    @classmethod
    def contract_example(cls) -> dict:
        """The physics contract on an 8x8, 2-coil spiral :class:`SigpyMultiCoilMRI` drawn by the generator."""
        return cls._contract(cls((8, 8), n_interleaves=3, n_turns=2, n_samples=24, dcf=False,
                                 dtype=torch.float64))
