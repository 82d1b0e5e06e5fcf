"""The input policy, as shared checks (private module).

Every public constructor and entry point of deepinv-ext checks its arguments with these functions, so that a bad
argument ends in a ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value) that names the
argument, says what was expected and shows what came, before any computation starts. The rules (README, "Input
policy"):

- counts and sizes are integers: a float or a bool is refused, never truncated (:func:`positive_int`);
- numbers are finite and in range (:func:`finite_number`, :func:`finite_values` for per-sample tensors);
- tensors are real floating tensors of the documented shape (:func:`check_tensor`); integer, boolean and complex
  tensors are refused; a floating tensor of another precision than a model's parameters is refused with a message
  saying how to cast (:func:`check_dtype`), never cast silently (a float64 check run in float32 would pass for the
  wrong reason);
- data that must be finite is checked once at the entry of a solve (:func:`check_finite`);
- a device that is not there is named with what is (:func:`checked_device`);
- a file that is missing, empty, truncated or foreign is named with what is wrong (:func:`load_checkpoint`).
"""

from __future__ import annotations

import math
import numbers
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def check_image(x: Tensor, channels: int, name: str = "x") -> None:
    """Raise unless ``x`` is a real floating tensor of shape ``(B, channels, H, W)``."""
    check_tensor(x, name)
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")


def positive_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; otherwise a ValueError naming ``name``.

    numpy and torch integer scalars count as integers; floats are refused even when integral (``8.0`` is
    more often a typo for an angle than a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def iteration_set(value: Any, max_iter: int, name: str = "record") -> tuple[int, ...]:
    """The sorted distinct iterations of ``value`` (a tuple or list of integers in ``[0, max_iter]``).

    :raises ValueError: ``value`` not a tuple or list, or an entry not an integer (a bool is refused) in range.
    """
    if not isinstance(value, (tuple, list)) or any(
            isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= max_iter for k in value):
        raise ValueError(f"{name} must hold iterations in [0, max_iter={max_iter}], got {value!r}")
    return tuple(sorted(set(value)))


def int_pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as a pair of integers ``>= minimum``: an integer ``n`` means ``(n, n)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be an integer or a pair of integers >= {minimum}, got {value!r}")
    return tuple(positive_int(v, name, minimum) for v in value)


def finite_number(value: float, name: str, minimum: float | None = 0.0, strict: bool = False,
                  maximum: float | None = None) -> float:
    """``value`` as a float if it is a finite real number ``>= minimum`` (``> minimum`` when ``strict``) and
    ``<= maximum``; otherwise a TypeError (not a number) or ValueError (out of range) naming ``name``.

    ``minimum=None`` means no lower bound. A one-element tensor counts as a number."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    low_ok = minimum is None or (value > minimum if strict else value >= minimum)
    if not (math.isfinite(value) and low_ok and (maximum is None or value <= maximum)):
        bounds = [] if minimum is None else [f"{'>' if strict else '>='} {minimum:g}"]
        bounds += [] if maximum is None else [f"<= {maximum:g}"]
        raise ValueError(f"{name} must be a finite number{''.join(' ' + b for b in bounds[:1])}"
                         f"{''.join(' and ' + b for b in bounds[1:])}, got {value}")
    return value


def finite_values(value: float | Tensor, name: str, minimum: float | None = 0.0, strict: bool = False) -> None:
    """Raise unless ``value`` (a number or a real tensor of per-sample values) is finite and ``>= minimum``
    (``> minimum`` when ``strict``) everywhere."""
    if not isinstance(value, Tensor):
        finite_number(value, name, minimum, strict)
        return
    if value.is_complex() or not (value.is_floating_point() or value.dtype in _INTEGER_DTYPES):
        raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
    ok = torch.isfinite(value)
    if minimum is not None:
        ok = ok & ((value > minimum) if strict else (value >= minimum))
    if not bool(ok.all()):
        low = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be finite{low} everywhere, got {value.flatten()[~ok.flatten()][:4].tolist()}")


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_tensor(x: Any, name: str, ndim: int | Iterable[int] | None = None,
                 shape: tuple[int | None, ...] | None = None, what: str = "") -> None:
    """Raise unless ``x`` is a real floating tensor with ``ndim`` dimensions (or one of several) and the ``shape``
    (``None`` entries match any size).

    :param what: how to describe the expected shape in the message, e.g. ``"(B, 1, H, W)"``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be a real floating tensor, got complex dtype {x.dtype}: "
                        "pass real and imaginary parts as two real channels")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor, got dtype {x.dtype}: cast it with {name}.float()")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
    fits = (dims is None or x.ndim in dims) and (
        shape is None or (x.ndim == len(shape) and all(s is None or s == t for s, t in zip(shape, x.shape))))
    if not fits:
        expected = what or ("(" + ", ".join("*" if s is None else str(s) for s in shape) + ")" if shape is not None
                            else f"{' or '.join(map(str, dims))} dimensions")
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def module_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of ``module``'s first floating parameter or buffer (``None`` when it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def check_dtype(x: Tensor, module: torch.nn.Module, name: str = "x") -> None:
    """Raise unless the floating tensor ``x`` has the precision of ``module``'s parameters.

    The one dtype rule of deepinv-ext: no silent cast. The message says both ways out."""
    dtype = module_dtype(module)
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {type(module).__name__} computes in {dtype}: pass "
                        f"{name}.to({dtype}) or move the model with .to({x.dtype})")


def check_finite(x: Tensor, name: str) -> None:
    """Raise unless every entry of ``x`` is finite (one host sync: call it once per solve, not per iteration)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries of {x.numel()}")


def check_batch(x: Tensor, name: str) -> None:
    """Raise unless ``x`` holds at least one sample (for methods whose result is undefined on an empty batch)."""
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got an empty batch of shape {tuple(x.shape)}")


def checked_device(device: str | torch.device | None, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``, or a ValueError naming it and the devices this machine has."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            have = f"{count} CUDA device(s)" if count else "no CUDA device (torch.cuda.is_available() is False)"
            raise ValueError(f"{name}={str(device)!r} was requested but this machine has {have}; use "
                             f"{name}='cpu'" + (f" or an index below {count}" if count else ""))
    return device


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: Iterable[str] = (), what: str = "checkpoint") -> dict:
    """Load the torch checkpoint at ``path`` with ``weights_only=True`` and check that it holds the ``required``
    keys.

    A missing, empty, truncated or corrupt file, or a foreign one (not a dict, or without the required keys), gets
    an error naming the file and what is wrong (never the unpickler's advice to load with ``weights_only=False``).

    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is empty, unreadable, or not a ``what`` of the expected layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist" + (" (it is a directory)" if path.is_dir()
                                                                          else ""))
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {str(path)!r} is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable torch checkpoint ({type(err).__name__}): it is "
                         "truncated, corrupt, or holds objects other than tensors and plain containers") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a dict, got {type(checkpoint).__name__}")
    missing = [k for k in required if k not in checkpoint]
    if missing:
        raise ValueError(f"{what} {str(path)!r} lacks the key(s) {missing}; it has {sorted(map(str, checkpoint))[:10]}")
    return checkpoint


def boolean(value: Any, name: str) -> bool:
    """``value`` if it is a bool; otherwise a TypeError naming ``name`` (a flag is never read by its truth value:
    the string ``"False"`` is true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_measurement(y: Any, physics: Any, x: Any = None, model: torch.nn.Module | None = None,
                      name: str = "y", x_name: str = "x_init") -> Tensor:
    r"""The entry check of a reconstruction algorithm ``model(y, physics)``, before it iterates.

    ``physics`` must be a deepinv ``LinearPhysics``; ``y`` a finite real floating tensor holding at least one sample,
    in the precision of ``model``'s parameters (:func:`check_dtype`), and of the shape of the measurements of
    ``physics``: ``y.shape == physics.A(x).shape`` with :math:`x = A^\top y` (a ``y`` that merely broadcasts
    against the operator, e.g. ``(B, 1, N, 1)`` for ``(B, 1, N, N)``, is refused). A starting point ``x`` (``None``:
    the algorithm's default) must be a finite real floating tensor of ``y``'s dtype and of the shape of
    :math:`A^\top y`, which must be a deepinv image, ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (an operator that
    broadcasts, such as a blur, lets a ``y`` without its channel axis through the shape test).

    :return: :math:`A^\top y` (``physics.A_adjoint(y)``), for algorithms that start there.
    :raises TypeError: ``physics``, ``y`` or ``x`` of the wrong kind or dtype.
    :raises ValueError: an empty batch, NaN or inf, or a shape that does not fit ``physics``.
    """
    from deepinv.physics import LinearPhysics

    if not isinstance(physics, LinearPhysics):
        raise TypeError(f"physics must be a deepinv.physics.LinearPhysics, got {type(physics).__name__}")
    check_tensor(y, name)
    check_batch(y, name)
    check_finite(y, name)
    if model is not None:
        check_dtype(y, model, name)
    try:
        x_adj = physics.A_adjoint(y)
        with torch.no_grad():
            y_shape = physics.A(x_adj).shape
    except (RuntimeError, IndexError, ValueError) as err:
        raise ValueError(f"{name} of shape {tuple(y.shape)} does not fit {type(physics).__name__}: applying "
                         f"its adjoint and the operator failed ({type(err).__name__}: {err})") from err
    if tuple(y.shape) != tuple(y_shape):
        raise ValueError(f"{name} must have the shape {tuple(y_shape)} of the measurements of "
                         f"{type(physics).__name__} (physics.A(physics.A_adjoint({name}))), got {tuple(y.shape)}")
    if x_adj.ndim < 4:  # an operator that broadcasts (a blur, denoising) passes a y without its channel axis
        raise ValueError(f"{name} of shape {tuple(y.shape)} gives the image physics.A_adjoint({name}) of shape "
                         f"{tuple(x_adj.shape)}, not a deepinv image (B, C, H, W) or (B, C, D, H, W): is the "
                         f"channel axis of {name} missing?")
    if x is not None:
        check_tensor(x, x_name)
        if x.dtype != y.dtype:
            raise TypeError(f"{x_name} has dtype {x.dtype} but {name} has {y.dtype}: pass {x_name}.to({y.dtype})")
        if x.shape != x_adj.shape:
            raise ValueError(f"{x_name} must have the shape {tuple(x_adj.shape)} of physics.A_adjoint({name}), "
                             f"got {tuple(x.shape)}")
        check_finite(x, x_name)
    return x_adj


def floating_dtype(value: Any, name: str = "dtype") -> torch.dtype:
    """``value`` if it is a real floating ``torch.dtype``; otherwise a TypeError naming ``name`` (an integer dtype
    would truncate images in [0, 1] to zeros, a string is not a dtype)."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a real floating torch.dtype such as torch.float32, got {value!r}")
    return value
