r"""Activation memory of a training step: the bytes autograd saves for backward, on any device.

ReTune's claim is a training memory flat in the number of restarts; :class:`SavedTensorMeter` measures it where
``torch.cuda.max_memory_allocated`` cannot (on the CPU), and counts only what the graph keeps.
"""

from __future__ import annotations

import torch

__all__ = ["SavedTensorMeter"]


class SavedTensorMeter:
    r"""Count the bytes of the tensors autograd saves for backward (the activation memory of training).

    A context manager around the forward pass (``torch.autograd.graph.saved_tensors_hooks``): every tensor the
    graph keeps is recorded once per storage, so ``meter.bytes`` is the memory a training step holds between
    forward and backward, on any device (the CPU counterpart of ``torch.cuda.max_memory_allocated``).

    |sep|

    :Examples:

    Both factors of ``w * w`` are saved for backward, one storage of 1000 float32 numbers:

    >>> import torch
    >>> from deepinv_ext.algorithms import SavedTensorMeter
    >>> w = torch.ones(1000, requires_grad=True)
    >>> with SavedTensorMeter() as meter:
    ...     loss = (w * w).sum()
    >>> meter.bytes, meter.count
    (4000, 1)
    """

    def __init__(self):
        self._seen: dict[tuple, int] = {}

    @property
    def bytes(self) -> int:
        """Total bytes of the distinct storages saved for backward."""
        return sum(self._seen.values())

    @property
    def count(self) -> int:
        """Number of distinct storages saved for backward."""
        return len(self._seen)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key = (t.device.type, storage.data_ptr())
            self._seen[key] = max(self._seen.get(key, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some wrappers)
            self._seen[("id", id(t))] = t.numel() * t.element_size()
        return t

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
