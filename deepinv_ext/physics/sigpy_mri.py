r"""Multi-coil MRI, Cartesian and non-Cartesian, as a differentiable deepinv physics through SigPy's NUFFT:
:class:`SigpyMultiCoilMRI`."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from deepinv.physics import MultiCoilMRI
from deepinv.physics.noise import NoiseModel
from torch import Tensor

from deepinv_ext._validation import check_batch, check_finite, checked_device, finite_number, positive_int
from deepinv_ext.physics._checks import (
    check_data,
    check_mask,
    check_solver_options,
    checked_coil_maps,
    checked_dcf,
    checked_trajectory,
)
from deepinv_ext.physics.functional.density import pipe_menon_dcf
from deepinv_ext.physics.functional.nufft import nufft, nufft_adjoint

__all__ = ["SigpyMultiCoilMRI"]


class SigpyMultiCoilMRI(MultiCoilMRI):
    r"""Multi-coil MRI, Cartesian (``mask``) or non-Cartesian (``trajectory``, SigPy NUFFT), differentiable.

    For :math:`N` coils with sensitivities :math:`s_n`,

    .. math::

        y_n = P\, F\, \mathrm{diag}(s_n)\, x, \qquad n = 1, \dots, N,

    with :math:`F` the centred unitary FFT and :math:`P` a Cartesian mask, or :math:`F` SigPy's Kaiser-Bessel NUFFT
    :footcite:p:`ong2019sigpy` at the locations of a trajectory (Fessler-Sutton min-max gridding
    :footcite:p:`fessler2003nonuniform`, scaled so that on a Cartesian grid it is the unitary centred DFT) and
    :math:`P = I`. With a ``mask`` (or neither) this is deepinv's :class:`deepinv.physics.MultiCoilMRI` with input
    checks added, the same ``y`` for the same ``x``.

    **Conventions** are deepinv's: images ``x`` are ``(B, 2, H, W)`` (real and imaginary part as channels),
    Cartesian k-space ``(B, 2, N, H, W)``, non-Cartesian k-space ``(B, 2, N, K)`` (as
    :class:`deepinv.physics.NonCartesianMRI`). Trajectories are SigPy's, ``(K, 2)`` or ``(B, K, 2)`` in cycles per
    field of view, in :math:`[-n_d/2, n_d/2]` (see :mod:`deepinv_ext.physics.functional.trajectories`).

    **Autograd** and :mod:`torch.func` (``vjp``, ``vmap``, ``jvp``) work through the NUFFT and its adjoint, a pair
    of :class:`torch.autograd.Function` whose backward is the other one
    (:func:`~deepinv_ext.physics.functional.nufft`), batched over images and coils in one SigPy call when the
    trajectory is shared, one call per sample when each sample has its own trajectory. The gradient with respect
    to the trajectory is not computed.

    **Devices**: CPU tensors go through NumPy and SigPy's Numba kernels. CUDA tensors go to SigPy's CuPy kernels
    through DLPack, without a host round trip; this path needs CuPy and is **untested here** (no GPU on the
    machine this was written on). The Cartesian path is pure torch on any device.

    **Pseudo-inverse** :meth:`A_dagger`, ``dagger="cg"`` (default): CG-SENSE :footcite:p:`pruessmann2001advances`,
    deepinv's conjugate gradient on :math:`A^H A x = A^H y` (:meth:`deepinv.physics.LinearPhysics.A_dagger`);
    ``dagger="dcf"``: the density-compensated, coil-normalised adjoint :math:`x = A^H(Dy) / \sum_n |s_n|^2`
    (:math:`D` = Pipe-Menon weights, or the mask in the Cartesian case: the zero-filled SENSE combination), one
    pass, no iterations.

    All geometry is held in registered buffers (``coil_maps``, ``mask``, ``trajectory``, ``dcf``), so
    ``state_dict``, ``clone()``, ``.to(device)``, :meth:`update` and the generators of
    :mod:`deepinv_ext.physics.generator.mri` (keys ``trajectory``, ``dcf``) and deepinv's mask generators (key
    ``mask``) work. In the non-Cartesian case ``mask`` is a buffer of ones kept for deepinv's base class.
    Measurements with NaN/inf are refused by :meth:`A_dagger` (the hot paths :meth:`A`, :meth:`A_adjoint` check
    shapes only and propagate them). Images and k-space are float32 or float64 tensors on the physics' device,
    with at least one sample; the products with the coil maps run in the higher of the two precisions and the
    result has the input's dtype.

    :param torch.Tensor coil_maps: complex sensitivities ``(N, H, W)`` or ``(B, N, H, W)``.
    :param torch.Tensor mask: Cartesian mask ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` (deepinv's shapes),
        e.g. from :class:`deepinv.physics.generator.EquispacedMaskGenerator`; ``None`` with no trajectory: full
        sampling.
    :param torch.Tensor trajectory: k-space locations ``(K, 2)`` or ``(B, K, 2)``, SigPy's convention.
    :param str, torch.Tensor, None dcf: density compensation for non-Cartesian data: ``"pipe_menon"`` (computed
        now and whenever the trajectory is updated without weights), weights ``(K,)``/``(B, K)``, or ``None``
        (ones; then ``dagger="dcf"`` is the plain adjoint).
    :param str dagger: ``"cg"`` (CG-SENSE) or ``"dcf"`` (density-compensated adjoint), see above.
    :param float oversamp: NUFFT grid oversampling.
    :param int width: NUFFT Kaiser-Bessel kernel width.
    :param deepinv.physics.NoiseModel noise_model: e.g. :class:`deepinv.physics.GaussianNoise` (applied to the
        real and imaginary parts of k-space; masked in the Cartesian case, as in deepinv).
    :param int max_iter: CG iterations of :meth:`A_dagger` (deepinv's ``max_iter``).
    :param float tol: CG tolerance.
    :param str, torch.device device: where the buffers live.
    :raises TypeError: a tensor of the wrong kind (real coil maps, a boolean or complex mask, trajectory or dcf), a
        number that is not one, ``noise_model`` not a deepinv noise model.
    :raises ValueError: a shape that does not match, NaN/inf or negative weights, ``oversamp < 1``,
        ``width < 2``, a float count, a CUDA device this machine lacks.

    |sep|

    :Examples:

        Radial k-space of 16 spokes, 4 coils, and the adjointness :math:`\langle Ax, y\rangle = \langle x, A^H
        y\rangle`:

        >>> import torch
        >>> from deepinv_ext.physics import SigpyMultiCoilMRI
        >>> from deepinv_ext.physics.functional import radial_trajectory
        >>> maps = SigpyMultiCoilMRI.birdcage_maps(4, (32, 32))
        >>> physics = SigpyMultiCoilMRI(maps, trajectory=radial_trajectory((32, 32), n_spokes=16))
        >>> x, y = torch.randn(2, 2, 32, 32), torch.randn(2, 2, 4, 1024)
        >>> physics.A(x).shape
        torch.Size([2, 2, 4, 1024])
        >>> lhs, rhs = (physics.A(x) * y).sum(), (x * physics.A_adjoint(y)).sum()
        >>> bool(abs(lhs - rhs) < 1e-4 * abs(lhs))
        True
    """

    def __init__(self, coil_maps: Tensor, mask: Tensor | None = None, trajectory: Tensor | None = None, *,
                 dcf: str | Tensor | None = "pipe_menon", dagger: str = "cg", oversamp: float = 1.25,
                 width: int = 4, noise_model: NoiseModel | None = None, max_iter: int = 50, tol: float = 1e-6,
                 device: torch.device | str = "cpu") -> None:
        if mask is not None and trajectory is not None:
            raise ValueError("pass either mask (Cartesian) or trajectory (non-Cartesian), not both")
        if dagger not in ("cg", "dcf"):
            raise ValueError(f"dagger must be 'cg' or 'dcf', got {dagger!r}")
        if not (isinstance(dcf, Tensor) or dcf in (None, "pipe_menon")):
            raise ValueError(f"dcf must be 'pipe_menon', a tensor or None, got {dcf!r}")
        oversamp = finite_number(oversamp, "oversamp", minimum=1.0)
        width = positive_int(width, "width", minimum=2)  # with oversamp >= 1, SigPy's Kaiser-Bessel beta is real
        device = checked_device(device)
        check_solver_options({"max_iter": max_iter, "tol": tol, "noise_model": noise_model})
        coil_maps = checked_coil_maps(coil_maps)
        img_size = tuple(coil_maps.shape[-2:])
        self.cartesian = trajectory is None
        if mask is not None:
            check_mask(mask, img_size)
        kwargs = {} if noise_model is None else {"noise_model": noise_model}
        super().__init__(mask=mask, coil_maps=coil_maps, img_size=img_size, device=device, max_iter=max_iter,
                         tol=tol, solver="CG", **kwargs)
        self.dagger, self.oversamp, self.width = dagger, oversamp, width
        self.dcf_mode = dcf if isinstance(dcf, str) else None
        if self.cartesian:
            self.register_buffer("trajectory", None)
            self.register_buffer("dcf", None)
        else:
            trajectory = checked_trajectory(trajectory, img_size)
            self.register_buffer("trajectory", trajectory.to(device))
            self.register_buffer("dcf", self._weights(trajectory, dcf).to(device))

    # ----------------------------------------------------------------- checks
    def _weights(self, traj: Tensor, dcf: str | Tensor | None) -> Tensor:
        if isinstance(dcf, str):
            return pipe_menon_dcf(traj, tuple(self.coil_maps.shape[-2:]))
        if dcf is None:
            return torch.ones(traj.shape[:2], dtype=traj.dtype, device=traj.device)
        return checked_dcf(dcf, traj.shape[1]).to(traj.dtype)

    def _check_image(self, x: Tensor) -> None:
        h, w = self.coil_maps.shape[-2:]
        check_data(x, "x", self.coil_maps.device, (None, 2, h, w), f"(B, 2, {h}, {w})")
        self._check_batch(x, "x")

    def _check_kspace(self, y: Tensor) -> None:
        n = self.coil_maps.shape[1]
        tail = tuple(self.coil_maps.shape[-2:]) if self.cartesian else (self.trajectory.shape[1],)
        check_data(y, "y", self.coil_maps.device, (None, 2, n, *tail),
                   f"(B, 2, {n}, {', '.join(map(str, tail))}) (coils = {n} as in coil_maps)")
        self._check_batch(y, "y")

    def _check_batch(self, t: Tensor, name: str) -> None:
        check_batch(t, name)
        b = t.shape[0]
        for buf in ("coil_maps", "mask", "trajectory", "dcf"):
            t = getattr(self, buf)
            if t is not None and b != 1 and t.shape[0] not in (1, b):
                raise ValueError(f"{name} has batch size {b}, but {buf} holds {t.shape[0]} samples")

    # ----------------------------------------------------------------- parameters
    def update_parameters(self, mask: Tensor | None = None, coil_maps: Tensor | None = None,
                          trajectory: Tensor | None = None, dcf: Tensor | None = None, **kwargs) -> None:
        r"""Update the coil maps, the mask (Cartesian) or the trajectory and weights (non-Cartesian).

        A new trajectory without ``dcf`` gets Pipe-Menon weights recomputed if the physics was built with
        ``dcf="pipe_menon"``, ones otherwise.

        :param torch.Tensor mask: Cartesian mask (Cartesian physics only).
        :param torch.Tensor coil_maps: complex sensitivities ``(N, H, W)`` or ``(B, N, H, W)``, same ``N, H, W``.
        :param torch.Tensor trajectory: k-space locations ``(K, 2)`` or ``(B, K, 2)`` (non-Cartesian only).
        :param torch.Tensor dcf: density compensation weights ``(K,)`` or ``(B, K)`` (non-Cartesian only).
        :param kwargs: other deepinv parameters (e.g. the noise model's ``sigma``).
        :raises ValueError: a Cartesian parameter given to a non-Cartesian physics or the other way round.
        """
        if coil_maps is not None:
            coil_maps = checked_coil_maps(coil_maps, self.coil_maps.shape[-2:])
            self.coil_maps = coil_maps.to(self.coil_maps.device)
        if self.cartesian:
            if trajectory is not None or dcf is not None:
                raise ValueError("a Cartesian SigpyMultiCoilMRI takes a mask, not a trajectory or dcf")
            if mask is not None:
                check_mask(mask, self.coil_maps.shape[-2:])
        else:
            if mask is not None:
                raise ValueError("a non-Cartesian SigpyMultiCoilMRI takes a trajectory, not a mask")
            if trajectory is not None:
                traj = checked_trajectory(trajectory, self.coil_maps.shape[-2:])
                weights = self._weights(traj, self.dcf_mode if dcf is None else dcf)
                self.trajectory = traj.to(self.trajectory.device)
                self.dcf = weights.to(self.dcf.device)
            elif dcf is not None:
                self.dcf = self._weights(self.trajectory, dcf).to(self.dcf.device)
        super().update_parameters(mask=mask, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> SigpyMultiCoilMRI:
        """:meth:`torch.nn.Module.to`, except that a real dtype casts the coil maps to the complex dtype of its
        precision (``.to(torch.float32)``: complex64), where torch would keep their real part only.

        :param args: a device and/or a dtype, as :meth:`torch.nn.Module.to`.
        :param kwargs: ``device``, ``dtype``, ``non_blocking``, as :meth:`torch.nn.Module.to`.
        """
        maps = self._buffers.get("coil_maps")  # None while deepinv's constructor moves the physics
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Casting complex values to real")
            super().to(*args, **kwargs)
        if maps is not None and not self.coil_maps.is_complex():
            self.coil_maps = maps.to(self.coil_maps.device, torch.promote_types(self.coil_maps.dtype, torch.complex64))
        return self

    # ----------------------------------------------------------------- operators
    @staticmethod
    def to_torch_complex(x: Tensor) -> Tensor:
        """``(B, 2, ...)`` real to ``(B, ...)`` complex, as deepinv's :class:`~deepinv.utils.mixins.MRIMixin` but
        without ``view_as_complex`` (a view that :func:`torch.func.vmap` cannot batch).

        :param torch.Tensor x: real and imaginary parts as channels.
        """
        return torch.complex(x[:, 0], x[:, 1])

    @staticmethod
    def from_torch_complex(x: Tensor) -> Tensor:
        """``(B, ...)`` complex to ``(B, 2, ...)`` real (vmap-safe, see :meth:`to_torch_complex`).

        :param torch.Tensor x: complex tensor.
        """
        return torch.stack([x.real, x.imag], dim=1)

    def A(self, x: Tensor, mask: Tensor | None = None, coil_maps: Tensor | None = None,
          trajectory: Tensor | None = None, dcf: Tensor | None = None, **kwargs) -> Tensor:
        r"""Multi-coil k-space :math:`y_n = P F \mathrm{diag}(s_n) x` of images ``x`` ``(B, 2, H, W)``:
        ``(B, 2, N, H, W)`` (Cartesian) or ``(B, 2, N, K)`` (non-Cartesian).

        :param torch.Tensor x: images, real and imaginary parts as channels.
        :param torch.Tensor mask: updates the mask first (as :meth:`update_parameters`, as in deepinv).
        :param torch.Tensor coil_maps: updates the coil maps first.
        :param torch.Tensor trajectory: updates the trajectory first.
        :param torch.Tensor dcf: updates the density compensation first.
        :param kwargs: other deepinv parameters, updated first.
        """
        self.update_parameters(mask=mask, coil_maps=coil_maps, trajectory=trajectory, dcf=dcf, **kwargs)
        self._check_image(x)
        if self.cartesian:
            return super().A(x).to(x.dtype)
        sx = self.coil_maps * self.to_torch_complex(x)[:, None]
        return self.from_torch_complex(nufft(sx, self.trajectory, self.oversamp, self.width)).to(x.dtype)

    def A_adjoint(self, y: Tensor, mask: Tensor | None = None, coil_maps: Tensor | None = None,
                  trajectory: Tensor | None = None, dcf: Tensor | None = None, **kwargs) -> Tensor:
        r"""Adjoint :math:`A^H y = \sum_n \bar s_n F^H P y_n`, images ``(B, 2, H, W)``.

        :param torch.Tensor y: k-space ``(B, 2, N, H, W)`` (Cartesian) or ``(B, 2, N, K)`` (non-Cartesian).
        :param torch.Tensor mask: updates the mask first (as :meth:`update_parameters`).
        :param torch.Tensor coil_maps: updates the coil maps first.
        :param torch.Tensor trajectory: updates the trajectory first.
        :param torch.Tensor dcf: updates the density compensation first.
        :param kwargs: passed to deepinv's Cartesian adjoint.
        """
        self.update_parameters(mask=mask, coil_maps=coil_maps, trajectory=trajectory, dcf=dcf)
        self._check_kspace(y)
        if self.cartesian:
            return super().A_adjoint(y, **kwargs).to(y.dtype)
        img = nufft_adjoint(self.to_torch_complex(y), self.trajectory, tuple(self.coil_maps.shape[-2:]),
                            self.oversamp, self.width)
        return self.from_torch_complex((self.coil_maps.conj() * img).sum(dim=1)).to(y.dtype)

    def noise(self, x: Tensor, **kwargs) -> Tensor:
        """Noise of the noise model (on sampled Cartesian locations only, as deepinv).

        :param torch.Tensor x: noiseless k-space.
        :param kwargs: parameters of the noise model (e.g. ``sigma``).
        """
        return super().noise(x, **kwargs) if self.cartesian else self.noise_model(x, **kwargs)

    def A_dagger(self, y: Tensor, mode: str | None = None, **kwargs) -> Tensor:
        r"""Pseudo-inverse: CG-SENSE (``mode="cg"``) or density-compensated adjoint (``mode="dcf"``).

        :param torch.Tensor y: k-space, finite.
        :param str mode: overrides the ``dagger`` of the constructor.
        :param kwargs: passed to :meth:`deepinv.physics.LinearPhysics.A_dagger` for CG (``max_iter``, ``tol``)
            or used to update the parameters.
        """
        mode = self.dagger if mode is None else mode
        if mode not in ("cg", "dcf"):
            raise ValueError(f"mode must be 'cg' or 'dcf', got {mode!r}")
        self.update_parameters(**{k: kwargs.pop(k) for k in ("mask", "coil_maps", "trajectory", "dcf") if k in kwargs})
        self._check_kspace(y)
        check_finite(y, "y")
        if mode == "cg":
            return super(MultiCoilMRI, self).A_dagger(y, **kwargs)
        self.update_parameters(**kwargs)
        weighted = y if self.cartesian else y * self.dcf[:, None, None].to(y.dtype)
        x = self.A_adjoint(weighted)
        energy = (self.coil_maps.abs() ** 2).sum(dim=1)
        inv = torch.where(energy > 1e-6 * energy.amax(), 1.0 / energy, torch.zeros_like(energy))
        return x * inv[:, None].to(x.dtype)

    # ----------------------------------------------------------------- test data
    @staticmethod
    def birdcage_maps(n_coils: int, img_size: tuple[int, int], normalize: bool = True,
                      dtype: torch.dtype = torch.complex64) -> Tensor:
        r"""SigPy's simulated birdcage sensitivities ``(N, H, W)`` (:func:`sigpy.mri.birdcage_maps`), scaled to
        :math:`\sum_n |s_n|^2 = 1` per pixel with ``normalize`` (then :math:`A^H A = I` under full sampling).

        :param int n_coils: number of coils :math:`N`.
        :param tuple img_size: image size ``(H, W)``.
        :param bool normalize: scale to :math:`\sum_n |s_n|^2 = 1`.
        :param torch.dtype dtype: a complex dtype.
        """
        import sigpy.mri as mr

        maps = torch.from_numpy(mr.birdcage_maps((n_coils, *img_size))).to(dtype)
        if normalize:
            maps = maps / (maps.abs() ** 2).sum(0, keepdim=True).sqrt()
        return maps

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """An 8x8, 2-coil radial physics (one trajectory shared by the batch) and float64 images, for
        :func:`deepinv_ext.testing.check_physics` (side-effect free: draws only from ``generator``).

        The contract check compares the batch with per-sample calls, which cannot hold for per-sample
        geometry (each single image meets every trajectory): per-sample trajectories are tested in
        tests/test_sigpy_mri.py.

        :param torch.Generator generator: where the images are drawn from (default: seeded with 0).
        """
        from deepinv_ext.physics.functional.trajectories import radial_trajectory
        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        base = radial_trajectory((8, 8), n_spokes=6, n_readout=12, dtype=torch.float64)
        physics = cls(cls.birdcage_maps(2, (8, 8), dtype=torch.complex128), trajectory=base, dcf=None)
        x = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)
        return {"physics": physics, "x": x}
