r"""SigPy's NUFFT and its adjoint as differentiable, batched torch functions: :func:`nufft`, :func:`nufft_adjoint`.

:func:`nufft` is SigPy's :footcite:p:`ong2019sigpy` Kaiser-Bessel NUFFT (Fessler-Sutton min-max gridding
:footcite:p:`fessler2003nonuniform`, scaled so that on a Cartesian grid it is the unitary centred DFT) at the k-space locations of a trajectory, SigPy's convention: ``(K, 2)`` or ``(B, K, 2)``
in cycles per field of view, in :math:`[-n_d/2, n_d/2]` (see :mod:`deepinv_ext.physics.functional.trajectories`).

Autograd: the NUFFT and its adjoint are a pair of :class:`torch.autograd.Function` whose backward is the other one
(so double backward works too), batched over images and coils in one SigPy call when the trajectory is shared, one
call per sample when each sample has its own trajectory (the loop stays inside the wrapper). They are written in
the ``setup_context`` style, so :mod:`torch.func` works on them: :func:`torch.func.vjp` (deepinv's
:func:`deepinv.physics.adjoint_function`), :func:`torch.func.vmap` (the vmapped dimension is folded into the
sample dimension) and :func:`torch.func.jvp` (forward mode). Unlike SigPy's
``to_pytorch_function``, they take and return complex torch tensors with a batch dimension and need no layout
conversion. The gradient with respect to the trajectory is not computed.

Devices: CPU tensors go through NumPy and SigPy's Numba kernels. CUDA tensors go to SigPy's CuPy kernels through
DLPack, without a host round trip (:mod:`deepinv_ext.physics.functional.sigpy_arrays`); this path needs CuPy and is
**untested here** (no GPU on the machine this was written on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deepinv_ext.physics.functional.sigpy_arrays import to_array, to_tensor

__all__ = ["nufft", "nufft_adjoint"]


def _sigpy_nufft(x: Tensor, coord: Tensor, oversamp: float, width: int) -> Tensor:
    import sigpy as sp

    coord = coord.to(x.real.dtype)
    if coord.shape[0] == 1:
        return to_tensor(sp.nufft(to_array(x), to_array(coord[0]), oversamp, width), x.device)
    return torch.stack([to_tensor(sp.nufft(to_array(x[b]), to_array(coord[b]), oversamp, width), x.device)
                        for b in range(x.shape[0])])


def _sigpy_nufft_adjoint(y: Tensor, coord: Tensor, img_size: tuple[int, int], oversamp: float,
                         width: int) -> Tensor:
    import sigpy as sp

    coord = coord.to(y.real.dtype)
    if coord.shape[0] == 1:
        out = sp.nufft_adjoint(to_array(y), to_array(coord[0]), (*y.shape[:-1], *img_size), oversamp, width)
        return to_tensor(out, y.device)
    return torch.stack([
        to_tensor(sp.nufft_adjoint(to_array(y[b]), to_array(coord[b]), (*y.shape[1:-1], *img_size),
                                    oversamp, width), y.device)
        for b in range(y.shape[0])])


def _fold_vmap(info: Any, in_dims: tuple, data: Tensor, coord: Tensor) -> tuple[Tensor, Tensor, int]:
    r"""Fold a vmapped dimension of size :math:`V` into the leading (sample) dimension for one SigPy call:
    ``data`` ``(V, B, ...)`` and ``coord`` ``(V, B_c, K, 2)`` become ``(V B, ...)`` and ``(V B, K, 2)``, or keep
    a shared trajectory ``(1, K, 2)`` when the trajectory is not vmapped and shared. Returns the data, the
    trajectory and ``B``."""
    n_map = info.batch_size
    data = data.movedim(in_dims[0], 0) if in_dims[0] is not None else data.expand(n_map, *data.shape)
    if in_dims[1] is None and coord.shape[0] == 1:
        return data.reshape(-1, *data.shape[2:]), coord, data.shape[1]
    coord = coord.movedim(in_dims[1], 0) if in_dims[1] is not None else coord.expand(n_map, *coord.shape)
    batch = max(data.shape[1], coord.shape[1])
    data = data.expand(n_map, batch, *data.shape[2:])
    coord = coord.expand(n_map, batch, *coord.shape[2:])
    return data.reshape(-1, *data.shape[2:]), coord.reshape(-1, *coord.shape[2:]), batch


class _NUFFT(torch.autograd.Function):
    r"""SigPy's NUFFT of ``x`` ``(B, ..., H, W)`` at ``coord`` ``(1 or B, K, 2)``; backward :class:`_NUFFTAdjoint`.

    ``setup_context`` style, so :mod:`torch.func` transforms work: ``vmap`` folds the vmapped dimension into the
    sample dimension (:func:`_fold_vmap`, one SigPy call for a shared trajectory), ``jvp`` is the NUFFT of the
    tangent of ``x`` (the map is linear in ``x``). No derivative with respect to ``coord`` (its tangent and
    gradient are ignored).
    """

    @staticmethod
    def forward(x: Tensor, coord: Tensor, oversamp: float, width: int) -> Tensor:
        return _sigpy_nufft(x, coord, oversamp, width)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, coord, oversamp, width = inputs
        ctx.save_for_backward(coord)
        ctx.save_for_forward(coord)
        ctx.conf = (tuple(x.shape[-2:]), oversamp, width)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        (coord,) = ctx.saved_tensors
        img_size, oversamp, width = ctx.conf
        return _NUFFTAdjoint.apply(grad, coord, img_size, oversamp, width), None, None, None

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor, *_: Any) -> Tensor:
        (coord,) = ctx.saved_tensors
        return _NUFFT.apply(x_t, coord, *ctx.conf[1:])

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, coord: Tensor, oversamp: float,
             width: int) -> tuple[Tensor, int]:
        x, coord, batch = _fold_vmap(info, in_dims, x, coord)
        out = _NUFFT.apply(x, coord, oversamp, width)
        return out.reshape(info.batch_size, batch, *out.shape[1:]), 0


class _NUFFTAdjoint(torch.autograd.Function):
    """SigPy's adjoint NUFFT, ``(B, ..., K)`` to ``(B, ..., H, W)``; backward :class:`_NUFFT`; as :class:`_NUFFT`
    for :mod:`torch.func`."""

    @staticmethod
    def forward(y: Tensor, coord: Tensor, img_size: tuple[int, int], oversamp: float, width: int) -> Tensor:
        return _sigpy_nufft_adjoint(y, coord, img_size, oversamp, width)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, coord, img_size, oversamp, width = inputs
        ctx.save_for_backward(coord)
        ctx.save_for_forward(coord)
        ctx.conf = (img_size, oversamp, width)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        (coord,) = ctx.saved_tensors
        return _NUFFT.apply(grad, coord, *ctx.conf[1:]), None, None, None, None

    @staticmethod
    def jvp(ctx: Any, y_t: Tensor, *_: Any) -> Tensor:
        (coord,) = ctx.saved_tensors
        return _NUFFTAdjoint.apply(y_t, coord, *ctx.conf)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, y: Tensor, coord: Tensor, img_size: tuple[int, int], oversamp: float,
             width: int) -> tuple[Tensor, int]:
        y, coord, batch = _fold_vmap(info, in_dims, y, coord)
        out = _NUFFTAdjoint.apply(y, coord, img_size, oversamp, width)
        return out.reshape(info.batch_size, batch, *out.shape[1:]), 0


def nufft(x: Tensor, trajectory: Tensor, oversamp: float = 1.25, width: int = 4) -> Tensor:
    r"""Differentiable batched SigPy NUFFT: complex ``(B, ..., H, W)`` to ``(B, ..., K)``.

    SigPy's :footcite:p:`ong2019sigpy` non-uniform Fourier transform

    .. math:: (Fx)_k = \frac{1}{\sqrt{HW}} \sum_{p} x_p\, e^{-2i\pi \langle \kappa_k, p / n \rangle}

    at the k-space locations :math:`\kappa_k` of the trajectory (:math:`p` the centred pixel indices, :math:`p / n`
    divided by the image size entrywise), computed by Kaiser-Bessel gridding on an oversampled grid
    :footcite:p:`fessler2003nonuniform`. On a Cartesian grid it is the unitary centred DFT. Its backward is
    :func:`nufft_adjoint`.

    :param torch.Tensor x: complex images; the leading dimension is the batch.
    :param torch.Tensor trajectory: ``(K, 2)``, ``(1, K, 2)`` (shared) or ``(B, K, 2)`` (one per sample).
    :param float oversamp: grid oversampling factor.
    :param int width: Kaiser-Bessel kernel width.

    |sep|

    :Examples:

        The NUFFT and its adjoint are adjoint, :math:`\langle F x, y\rangle = \langle x, F^H y\rangle`:

        >>> import torch
        >>> from deepinv_ext.physics.functional import nufft, nufft_adjoint, radial_trajectory
        >>> k = radial_trajectory((16, 16), n_spokes=8)
        >>> x = torch.randn(2, 16, 16, dtype=torch.complex64)
        >>> y = torch.randn(2, k.shape[0], dtype=torch.complex64)
        >>> lhs = torch.vdot(nufft(x, k).flatten(), y.flatten())
        >>> rhs = torch.vdot(x.flatten(), nufft_adjoint(y, k, (16, 16)).flatten())
        >>> bool(abs(lhs - rhs) < 1e-4 * abs(lhs))
        True
    """
    coord = trajectory[None] if trajectory.ndim == 2 else trajectory
    if coord.shape[0] > x.shape[0]:
        x = x.expand(coord.shape[0], *x.shape[1:])
    return _NUFFT.apply(x, coord, oversamp, width)


def nufft_adjoint(y: Tensor, trajectory: Tensor, img_size: tuple[int, int], oversamp: float = 1.25,
                  width: int = 4) -> Tensor:
    r"""Differentiable batched adjoint :math:`F^H` of :func:`nufft`: complex ``(B, ..., K)`` to ``(B, ..., H, W)``,

    .. math:: (F^H y)_p = \frac{1}{\sqrt{HW}} \sum_k y_k\, e^{2i\pi \langle \kappa_k, p / n \rangle}.

    :param torch.Tensor y: complex k-space samples; the leading dimension is the batch.
    :param torch.Tensor trajectory: ``(K, 2)``, ``(1, K, 2)`` (shared) or ``(B, K, 2)`` (one per sample).
    :param tuple img_size: image size ``(H, W)``.
    :param float oversamp: grid oversampling factor.
    :param int width: Kaiser-Bessel kernel width.

    |sep|

    :Examples:

        On the Cartesian grid, :math:`F^H` inverts :math:`F` (the unitary DFT):

        >>> import torch
        >>> from deepinv_ext.physics.functional import nufft, nufft_adjoint
        >>> grid = torch.stack(torch.meshgrid(torch.arange(-4.0, 4), torch.arange(-4.0, 4), indexing="ij"), -1)
        >>> x = torch.randn(1, 8, 8, dtype=torch.complex128)
        >>> x_back = nufft_adjoint(nufft(x, grid.reshape(-1, 2), oversamp=2.0, width=6), grid.reshape(-1, 2), (8, 8),
        ...                        oversamp=2.0, width=6)
        >>> bool((x_back - x).abs().max() < 1e-2)
        True
    """
    coord = trajectory[None] if trajectory.ndim == 2 else trajectory
    if coord.shape[0] > y.shape[0]:
        y = y.expand(coord.shape[0], *y.shape[1:])
    return _NUFFTAdjoint.apply(y, coord, tuple(img_size), oversamp, width)
