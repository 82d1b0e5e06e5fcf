r"""A physics' cache of backend objects, kept while its geometry buffers are unchanged (private module).

Backend objects (ASTRA projectors, sparse system matrices, index tensors) are expensive to make and depend on the
geometry buffers of the physics (for :class:`deepinv_ext.physics.AstraCT`: ``angles``, ``full_angles``). A
:class:`TransientCache` keeps them, keyed by the caller, until one of those buffers is assigned (the physics calls
:meth:`TransientCache.invalidate`), modified in place, moved or cast (seen in the buffers' device, dtype, storage
pointer, version counter and shape, without a device sync). It is never copied, pickled or put in a state dict: a
clone or an unpickled physics starts with an empty cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TransientCache"]


class TransientCache:
    """Objects built from a physics' geometry buffers, kept until a buffer changes; never copied or pickled."""

    def __init__(self) -> None:
        self.key: Any = None
        self.generation = 0  # bumped whenever a geometry buffer is assigned
        self.ops: dict[tuple, Any] = {}

    def __deepcopy__(self, memo: dict) -> TransientCache:
        return TransientCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def invalidate(self) -> None:
        """Forget everything (a geometry buffer was assigned)."""
        self.generation += 1

    def get(self, buffers: tuple[torch.Tensor, ...], key: tuple, build: Callable[[], Any]) -> Any:
        """``build()``, kept under ``key`` while ``buffers`` keep their device, dtype, storage, version and shape
        and :meth:`invalidate` is not called."""
        state = (self.generation,) + tuple((b.device, b.dtype, b.data_ptr(), b._version, b.shape) for b in buffers)
        if self.key != state:
            self.key, self.ops = state, {}
        if key not in self.ops:
            self.ops[key] = build()
        return self.ops[key]
