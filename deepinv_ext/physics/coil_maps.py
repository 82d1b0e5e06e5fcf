r"""Coil sensitivity maps by ESPIRiT from Cartesian or non-Cartesian multi-coil k-space, batched.

ESPIRiT :footcite:p:`uecker2014espirit` finds the maps as the eigenvectors, with eigenvalue 1, of the per-pixel operator built
from the null space of the calibration matrix of a fully sampled central k-space region. Here SigPy's
:class:`sigpy.mri.app.EspiritCalib` does the work (the same as deepinv's
:meth:`deepinv.physics.MultiCoilMRI.estimate_coil_maps`, with all of ESPIRiT's parameters exposed); this module adds

- non-Cartesian data: the samples inside the calibration square :math:`|k_d| < c/2` are gridded, by a
  density-compensated adjoint NUFFT onto a :math:`c \times c` image and its centred FFT, to a Cartesian
  calibration region, zero-padded to the image size;
- batches: one call per sample (SigPy's ESPIRiT is unbatched), the loop inside, on CPU (NumPy) or, for CUDA
  tensors, CuPy through DLPack (untested here: no GPU).

The maps are unique up to a per-pixel phase common to all coils; they are normalised to
:math:`\sum_n |s_n|^2 = 1` inside the support and zero outside (``crop``).
"""

from __future__ import annotations

import torch
from deepinv.utils.mixins import MRIMixin
from torch import Tensor

from deepinv_ext._validation import check_batch, check_finite, finite_number, int_pair, positive_int
from deepinv_ext.physics._checks import check_device, check_real, checked_dcf, checked_trajectory
from deepinv_ext.physics.functional.density import pipe_menon_dcf
from deepinv_ext.physics.functional.nufft import nufft_adjoint
from deepinv_ext.physics.functional.sigpy_arrays import to_array, to_tensor

__all__ = ["estimate_coil_maps", "grid_calibration"]

_LAYOUTS = "(B, 2, N, H, W) (Cartesian) or (B, 2, N, K) (non-Cartesian)"


def _check_kspace(y: Tensor, ndim: tuple[int, ...]) -> None:
    """Raise unless ``y`` is finite float32/float64 k-space in deepinv's layout with at least one sample."""
    check_real(y, "y", ndim=ndim, what=_LAYOUTS)
    if y.shape[1] != 2:
        raise ValueError(f"y must have shape {_LAYOUTS} (real and imaginary parts), got {tuple(y.shape)}")
    check_batch(y, "y")
    check_finite(y, "y")


def _check_calib_size(calib_size: int, img_size: tuple[int, int]) -> int:
    calib_size = positive_int(calib_size, "calib_size", minimum=4)
    if calib_size > min(img_size):
        raise ValueError(f"calib_size must be in [4, min(H, W) = {min(img_size)}], got {calib_size}")
    return calib_size


def grid_calibration(y: Tensor, trajectory: Tensor, img_size: tuple[int, int], calib_size: int = 24,
                     dcf: Tensor | None = None) -> Tensor:
    r"""Cartesian k-space ``(B, N, H, W)`` (complex) holding the gridded :math:`c \times c` centre of
    non-Cartesian data ``y`` ``(B, 2, N, K)``, zeros elsewhere.

    :param torch.Tensor y: non-Cartesian k-space, deepinv's layout.
    :param torch.Tensor trajectory: ``(K, 2)`` or ``(B, K, 2)``, SigPy's convention.
    :param tuple img_size: image size ``(H, W)``.
    :param int calib_size: side :math:`c` of the calibration square.
    :param torch.Tensor dcf: weights ``(K,)``/``(B, K)``; default: Pipe-Menon of the calibration samples.
    :raises TypeError: a tensor of the wrong kind, a non-integer size.
    :raises ValueError: shapes, sizes or devices that do not match, NaN/inf, an empty batch.
    """
    _check_kspace(y, (4,))
    h, w = int_pair(img_size, "img_size", minimum=2)
    calib_size = _check_calib_size(calib_size, (h, w))
    traj = checked_trajectory(trajectory, (h, w))
    check_device(traj, "trajectory", y.device, owner="y")
    if traj.shape[1] != y.shape[-1] or traj.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"trajectory must be (K, 2) or (B, K, 2) with K = {y.shape[-1]} and B = {y.shape[0]} "
                         f"(as y), got shape {tuple(trajectory.shape)}")
    weights = None if dcf is None else checked_dcf(dcf, traj.shape[1])
    if weights is not None:
        check_device(weights, "dcf", y.device, owner="y")
        if weights.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"dcf holds {weights.shape[0]} samples, y {y.shape[0]}")
    ksp = MRIMixin.to_torch_complex(y)  # (B, N, K)
    out = torch.zeros(*ksp.shape[:2], h, w, dtype=ksp.dtype, device=ksp.device)
    for b in range(ksp.shape[0]):
        tb = traj[b if traj.shape[0] > 1 else 0]
        inside = (tb.abs() < calib_size / 2).all(dim=-1)
        if int(inside.sum()) < calib_size:
            raise ValueError(f"only {int(inside.sum())} samples of sample {b} lie in the calibration square "
                             f"|k| < {calib_size / 2}: the trajectory does not sample the k-space centre")
        coords = tb[inside]
        wb = (pipe_menon_dcf(coords, (calib_size, calib_size))[0] if weights is None
              else weights[b if weights.shape[0] > 1 else 0][inside])
        low = nufft_adjoint(ksp[b][:, inside] * wb.to(ksp.dtype), coords, (calib_size, calib_size))
        calib = MRIMixin.fft(low)
        top, left = h // 2 - calib_size // 2, w // 2 - calib_size // 2
        out[b, :, top: top + calib_size, left: left + calib_size] = calib
    return out


def estimate_coil_maps(y: Tensor, calib_size: int = 24, *, trajectory: Tensor | None = None,
                       img_size: tuple[int, int] | None = None, dcf: Tensor | None = None, thresh: float = 0.02,
                       kernel_width: int = 6, crop: float = 0.95, max_iter: int = 100) -> Tensor:
    r"""ESPIRiT coil maps ``(B, N, H, W)`` (complex) from multi-coil k-space.

    The maps :math:`s_n` :footcite:p:`uecker2014espirit` are the eigenvectors, with eigenvalue 1, of the per-pixel operator built from the null
    space of the calibration matrix of a fully sampled :math:`c \times c` centre of k-space (SigPy's
    :class:`sigpy.mri.app.EspiritCalib`). Non-Cartesian data are first gridded onto that centre by a
    density-compensated adjoint NUFFT. The maps are unique up to a per-pixel phase common to all coils; they are
    normalised to :math:`\sum_n |s_n|^2 = 1` inside the support and zero outside (``crop``). One call per sample.

    :param torch.Tensor y: Cartesian k-space ``(B, 2, N, H, W)`` (deepinv's layout, centred) with a fully sampled
        :math:`c \times c` centre, or non-Cartesian ``(B, 2, N, K)`` with ``trajectory`` and ``img_size``.
    :param int calib_size: side :math:`c` of the calibration region.
    :param torch.Tensor trajectory: non-Cartesian locations ``(K, 2)`` or ``(B, K, 2)``, SigPy's convention.
    :param tuple img_size: image size ``(H, W)`` (non-Cartesian only).
    :param torch.Tensor dcf: density compensation for gridding (non-Cartesian; default Pipe-Menon).
    :param float thresh: singular-value threshold of the calibration matrix (relative to the largest).
    :param int kernel_width: ESPIRiT kernel width.
    :param float crop: eigenvalue threshold below which maps are set to zero (outside the object).
    :param int max_iter: power iterations.
    :raises TypeError: a tensor or number of the wrong kind.
    :raises ValueError: a shape, size or device that does not match, NaN/inf, an empty batch, ``thresh`` or
        ``crop`` outside :math:`[0, 1]`, ``kernel_width`` above ``calib_size``.

    |sep|

    :Examples:

        Maps from the fully sampled k-space of a phantom seen by 4 birdcage coils:

        >>> import sigpy
        >>> import torch
        >>> from deepinv_ext.physics import SigpyMultiCoilMRI, estimate_coil_maps
        >>> maps = SigpyMultiCoilMRI.birdcage_maps(4, (32, 32))
        >>> x = torch.view_as_real(torch.from_numpy(sigpy.shepp_logan((32, 32))).to(torch.complex64))
        >>> y = SigpyMultiCoilMRI(maps).A(x.permute(2, 0, 1)[None])
        >>> estimated = estimate_coil_maps(y, calib_size=16)
        >>> estimated.shape
        torch.Size([1, 4, 32, 32])
        >>> energy = (estimated.abs() ** 2).sum(dim=1)  # 1 inside the support, 0 outside
        >>> bool(((energy - 1).abs() < 1e-3).logical_or(energy == 0).all())
        True
    """
    import sigpy as sp
    from sigpy.mri.app import EspiritCalib

    _check_kspace(y, (4, 5))
    thresh = finite_number(thresh, "thresh", maximum=1.0)
    crop = finite_number(crop, "crop", maximum=1.0)
    max_iter = positive_int(max_iter, "max_iter")
    if y.ndim == 4:
        if trajectory is None or img_size is None:
            raise ValueError("non-Cartesian y (B, 2, N, K) needs trajectory and img_size")
        ksp = grid_calibration(y, trajectory, img_size, calib_size, dcf)
    else:
        if trajectory is not None:
            raise ValueError("Cartesian y (B, 2, N, H, W) takes no trajectory")
        calib_size = _check_calib_size(calib_size, y.shape[-2:])
        ksp = MRIMixin.to_torch_complex(y)
    kernel_width = positive_int(kernel_width, "kernel_width")
    if kernel_width > calib_size:
        raise ValueError(f"kernel_width must be at most calib_size = {calib_size}, got {kernel_width}")
    maps = []
    for kb in ksp:
        arr = to_array(kb)
        app = EspiritCalib(arr, calib_width=calib_size, thresh=thresh, kernel_width=kernel_width, crop=crop,
                           max_iter=max_iter, device=sp.get_device(arr), show_pbar=False)
        maps.append(to_tensor(app.run(), y.device))
    return torch.stack(maps)
