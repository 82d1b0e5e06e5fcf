"""Per-sample reductions and broadcasts over a leading batch dimension (private module)."""

from __future__ import annotations

from torch import Tensor


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """The per-sample vector ``v`` of shape ``(B,)`` reshaped to ``(B, 1, ..., 1)`` to broadcast against ``like``
    of shape ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))
