r"""Input checks shared by the physics and generators of :mod:`deepinv_ext.physics` (private module).

They complete :mod:`deepinv_ext._validation` with what only the physics need: the data a physics is applied to
(float32 or float64, of its shape, on its device), view angles and trajectories, the dtype and random generator of a
generator, and the solver and noise keywords that the physics hand to deepinv's base classes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from deepinv.physics.noise import NoiseModel
from torch import Tensor

from deepinv_ext._validation import check_finite, check_tensor, finite_number, finite_values, positive_int

REAL_DTYPES = (torch.float32, torch.float64)


def check_real(t: Any, name: str, **shape: Any) -> None:
    """Raise unless ``t`` is a float32 or float64 tensor (``shape``: the keywords of
    :func:`~deepinv_ext._validation.check_tensor`)."""
    check_tensor(t, name, **shape)
    if t.dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}: cast it with {name}.float()")


def check_device(t: Tensor, name: str, device: torch.device, owner: str = "the physics") -> None:
    """Raise a ValueError unless the tensor ``t`` is on ``device``, where ``owner`` lives."""
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but {owner} is on {device}: pass {name}.to('{device}')"
                         + (f" or move the physics with .to('{t.device}')" if owner == "the physics" else ""))


def check_data(t: Any, name: str, device: torch.device, shape: tuple[int | None, ...], what: str) -> None:
    """Raise unless ``t`` is a float32 or float64 tensor of ``shape`` (``None`` entries match any size, described
    by ``what``) on the physics' ``device``."""
    check_real(t, name, shape=shape, what=what)
    check_device(t, name, device)


def real_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """``dtype`` if it is ``torch.float32`` or ``torch.float64``, else a TypeError naming ``name``."""
    if dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_rng(rng: Any) -> None:
    """Raise a TypeError unless ``rng`` is ``None`` or a :class:`torch.Generator`."""
    if rng is not None and not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__} {rng!r:.60}")


def check_solver_options(options: dict) -> None:
    """Check the keywords that deepinv's :class:`~deepinv.physics.LinearPhysics` takes unchecked, when present:
    ``max_iter`` (an integer >= 1), ``tol`` (a finite number >= 0), ``noise_model`` (a deepinv noise model)."""
    if "max_iter" in options:
        positive_int(options["max_iter"], "max_iter")
    if "tol" in options:
        finite_number(options["tol"], "tol")
    noise = options.get("noise_model")
    if noise is not None and not isinstance(noise, NoiseModel):
        raise TypeError(f"noise_model must be a deepinv.physics.NoiseModel (e.g. GaussianNoise(0.1)) or None, got "
                        f"{type(noise).__name__} {noise!r:.60}")


def real_values(value: Any, name: str, what: str) -> Tensor:
    """``value`` (a sequence or tensor of real numbers, ``what``) as a float64 CPU tensor; a TypeError for a
    string, a boolean or complex tensor or anything torch cannot read as numbers, a ValueError for NaN/inf."""
    bad_tensor = isinstance(value, Tensor) and (value.is_complex() or value.dtype == torch.bool)
    if bad_tensor or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r:.60}")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r:.60}") from None
    tensor = tensor.detach().cpu()
    finite_values(tensor, name, minimum=None)
    return tensor


def image_size(img_size: Any) -> tuple[int, int]:
    """``(H, W)`` from an int, ``(H, W)`` or ``(C, H, W)`` of positive integers (a float is refused, not
    truncated)."""
    sides = img_size
    if isinstance(img_size, numbers.Integral) and not isinstance(img_size, bool):
        sides = (img_size, img_size)
    if not isinstance(sides, Sequence) or len(sides) not in (2, 3) or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sides):
        raise ValueError(f"img_size must be a positive int, (H, W) or (C, H, W) of positive ints, got {img_size!r}")
    return tuple(int(s) for s in sides[-2:])


def checked_views(angles: Any) -> Tensor:
    """New views for a CT physics: float64, ``(n_views,)`` or ``(B, n_views)``, finite, at least one."""
    angles = real_values(angles, "angles", "a tensor of view angles in degrees, (n_views,) or (B, n_views)")
    if angles.ndim not in (1, 2) or angles.numel() < 1:
        raise ValueError(f"angles must be (n_views,) or (B, n_views) with at least one view, got shape "
                         f"{tuple(angles.shape)}")
    return angles


def view_angles(angles: Any, stop: float, name: str = "angles") -> Tensor:
    """View angles in degrees as a flat float64 CPU tensor: an integer ``n`` means ``n`` views spread uniformly
    over ``[0, stop)``; a sequence or tensor gives the angles. A float or a 0-dim tensor is refused (a TypeError:
    ``8.0`` is more often a typo for a count than one view at 8 degrees)."""
    if isinstance(angles, numbers.Integral) and not isinstance(angles, bool):
        n = positive_int(angles, name)
        return torch.arange(n, dtype=torch.float64) * (stop / n)
    if isinstance(angles, numbers.Number) or (isinstance(angles, Tensor) and angles.ndim == 0):
        one = angles.item() if isinstance(angles, Tensor) else angles
        raise TypeError(f"{name} must be an int number of views or a sequence/tensor of angles in degrees, got the "
                        f"scalar {angles!r} (for one view at that angle pass [{one!r}])")
    tensor = real_values(angles, name, "an int number of views or a sequence/tensor of angles in degrees").flatten()
    if tensor.numel() < 1:
        raise ValueError(f"{name} must hold at least one view")
    return tensor


def checked_trajectory(trajectory: Any, img_size: tuple[int, int] | None = None) -> Tensor:
    r"""A finite real floating k-space trajectory ``(K, 2)`` or ``(B, K, 2)``, ``B, K >= 1``, as ``(B, K, 2)``; with
    ``img_size``, inside SigPy's range :math:`[-H/2, H/2] \times [-W/2, W/2]`."""
    check_tensor(trajectory, "trajectory", ndim=(2, 3), what="(K, 2) or (B, K, 2)")
    traj = trajectory[None] if trajectory.ndim == 2 else trajectory
    if traj.shape[-1] != 2 or traj.shape[0] * traj.shape[1] == 0:
        raise ValueError(f"trajectory must be (K, 2) or (B, K, 2) with B, K >= 1, got shape {tuple(trajectory.shape)}")
    finite_values(traj, "trajectory", minimum=None)
    if img_size is not None:
        half = torch.tensor(tuple(img_size), dtype=traj.dtype, device=traj.device) / 2
        if bool((traj.abs() > half * (1 + 1e-6)).any()):
            raise ValueError(f"trajectory leaves [-H/2, H/2] x [-W/2, W/2] = +-{half.tolist()} (SigPy's units: "
                             f"cycles per field of view), max |k| = {traj.abs().amax((0, 1)).tolist()}")
    return traj


def checked_coil_maps(coil_maps: Any, img_size: tuple[int, int] | None = None) -> Tensor:
    """Finite complex64/complex128 coil maps ``(N, H, W)`` or ``(B, N, H, W)``, not empty, as ``(B, N, H, W)``;
    with ``img_size``, of that ``(H, W)``."""
    if not isinstance(coil_maps, Tensor) or coil_maps.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"coil_maps must be a complex64 or complex128 tensor, got {type(coil_maps).__name__}"
                        + (f" of dtype {coil_maps.dtype}" if isinstance(coil_maps, Tensor) else ""))
    if coil_maps.ndim not in (3, 4) or coil_maps.numel() == 0:
        raise ValueError(f"coil_maps must be (N, H, W) or (B, N, H, W), not empty, got shape {tuple(coil_maps.shape)}")
    if img_size is not None and tuple(coil_maps.shape[-2:]) != tuple(img_size):
        raise ValueError(f"coil_maps of size {tuple(coil_maps.shape[-2:])} do not match the image size "
                         f"{tuple(img_size)}")
    check_finite(coil_maps, "coil_maps")
    return coil_maps if coil_maps.ndim == 4 else coil_maps[None]


def check_mask(mask: Any, img_size: tuple[int, int]) -> None:
    """Raise unless ``mask`` is a finite real floating Cartesian mask ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``
    of the image size ``(H, W)``."""
    check_tensor(mask, "mask", ndim=(2, 3, 4), what="(H, W), (C, H, W) or (B, C, H, W)")
    if tuple(mask.shape[-2:]) != tuple(img_size):
        raise ValueError(f"mask has spatial shape {tuple(mask.shape[-2:])}, coil_maps {tuple(img_size)}")
    check_finite(mask, "mask")


def checked_dcf(dcf: Any, n_samples: int) -> Tensor:
    """Density compensation weights ``(K,)`` or ``(B, K)`` (``K = n_samples``), finite and >= 0, as ``(B, K)``."""
    check_tensor(dcf, "dcf", what=f"(K,) or (B, K) with K = {n_samples}")
    w = dcf[None] if dcf.ndim == 1 else dcf
    if w.ndim != 2 or w.shape[-1] != n_samples or w.shape[0] == 0:
        raise ValueError(f"dcf must be (K,) or (B, K) with K = {n_samples}, got {tuple(dcf.shape)}")
    finite_values(w, "dcf")
    return w
