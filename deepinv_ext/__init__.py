r"""deepinv-ext: learned variational regularisation for DeepInverse.

Areas mirror deepinv's: :mod:`deepinv_ext.physics`, :mod:`deepinv_ext.priors`, :mod:`deepinv_ext.denoisers`,
:mod:`deepinv_ext.algorithms`, :mod:`deepinv_ext.losses`, :mod:`deepinv_ext.datasets`, plus
:mod:`deepinv_ext.spectral` (matrix functions of symmetric operators). The plugin registry is
:mod:`deepinv_ext.plugins` and the contract checks are :mod:`deepinv_ext.testing`. Areas are imported on first
access (``deepinv_ext.physics``), so ``import deepinv_ext`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("deepinv-ext")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_AREAS = ("algorithms", "datasets", "denoisers", "losses", "physics", "plugins", "priors", "spectral", "testing")
__all__ = [*_AREAS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _AREAS:
        return importlib.import_module(f"deepinv_ext.{name}")
    raise AttributeError(f"module 'deepinv_ext' has no attribute {name!r}")
