r"""Torch tensors to and from the arrays SigPy computes on, without a copy.

SigPy works on NumPy arrays (CPU) and CuPy arrays (CUDA). :func:`to_array` hands it a torch tensor's memory (NumPy's
buffer protocol on the CPU, DLPack on CUDA) and :func:`to_tensor` takes the result back onto a torch device. The CUDA
path needs CuPy and is **untested here** (no GPU on the machine this was written on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["to_array", "to_tensor"]


def to_array(t: Tensor) -> Any:
    """A torch tensor as a NumPy (CPU) or CuPy (CUDA, through DLPack) array, sharing memory (detached, with any
    lazy conjugation resolved, made contiguous first).

    :param torch.Tensor t: the tensor.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics.functional import to_array
        >>> t = torch.arange(3.0)
        >>> a = to_array(t)
        >>> a[0] = 5.0  # the same memory
        >>> type(a).__name__, t.tolist()
        ('ndarray', [5.0, 1.0, 2.0])
    """
    t = t.detach().resolve_conj().contiguous()
    if t.device.type == "cpu":
        return t.numpy()
    import cupy  # pragma: no cover - needs a GPU and CuPy

    return cupy.from_dlpack(t)  # pragma: no cover


def to_tensor(a: Any, device: torch.device) -> Tensor:
    """A NumPy array as a torch tensor on ``device``, or a CuPy array as a CUDA tensor (DLPack, no copy).

    :param a: a NumPy or CuPy array.
    :param torch.device device: where a NumPy array goes (a CuPy array stays on its GPU).

    |sep|

    :Examples:

        >>> import numpy as np
        >>> import torch
        >>> from deepinv_ext.physics.functional import to_tensor
        >>> to_tensor(np.arange(3.0) * 2, torch.device("cpu"))
        tensor([0., 2., 4.], dtype=torch.float64)
    """
    if type(a).__module__.startswith("numpy"):
        return torch.from_numpy(a).to(device)
    return torch.from_dlpack(a)  # pragma: no cover - CuPy
