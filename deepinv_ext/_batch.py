"""Per-sample reductions and broadcasts over a leading batch dimension (private module)."""

from __future__ import annotations

import torch
from torch import Tensor


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`\langle a_b, b_b\rangle` of each batch element, shape ``(B,)``."""
    return (a * b).flatten(1).sum(dim=1)


def batch_sqnorm(x: Tensor) -> Tensor:
    r""":math:`\|x_b\|_2^2` of each batch element, shape ``(B,)``."""
    return x.pow(2).flatten(1).sum(dim=1)


def batch_norm(x: Tensor) -> Tensor:
    r""":math:`\|x_b\|_2` of each batch element, shape ``(B,)``."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """The per-sample vector ``v`` of shape ``(B,)`` reshaped to ``(B, 1, ..., 1)`` to broadcast against ``like``
    of shape ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))
