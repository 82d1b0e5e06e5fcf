"""Argument checks shared by the learned priors and their losses (private module)."""

from __future__ import annotations

import math

from torch import Tensor


def check_image(x: Tensor, channels: int) -> None:
    """Raise unless ``x`` is a tensor of shape ``(B, channels, H, W)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"x must have shape (B, {channels}, H, W), got {tuple(x.shape)}")


def positive_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def finite_number(value: float, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float if it is a finite number ``>= minimum`` (``> minimum`` when ``strict``); otherwise a
    ValueError naming ``name``."""
    if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value}")
    return float(value)
