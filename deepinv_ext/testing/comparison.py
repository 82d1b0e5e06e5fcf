"""How far apart two tensors are, as the contract checks report it."""

from __future__ import annotations

import torch


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    r""":math:`\max|a - b| / \max|b|` (the denominator kept above the dtype's smallest normal number), detached.

    :param torch.Tensor a: the value to check.
    :param torch.Tensor b: the reference.

    :Examples:

    >>> import torch
    >>> relative_error(torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0]))
    0.04999995231628418
    """
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))
