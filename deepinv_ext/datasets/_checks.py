"""The item-index check shared by the datasets (private module)."""

from __future__ import annotations

import numbers
from typing import Any


def item_index(index: Any, length: int) -> int:
    """``index`` as an item number in ``[0, length)`` (negative indices count from the end).

    :raises TypeError: ``index`` is not an integer (a float or a bool is never truncated).
    :raises IndexError: ``index`` is out of range (the sequence protocol's end-of-data signal).
    """
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"index must be an integer, got {type(index).__name__} {index!r}")
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of length {length}")
    return int(index) % length
