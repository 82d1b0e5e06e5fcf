"""Deprecated: moved to :mod:`deepinv_ext.algorithms.retune.baselines`."""
from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.algorithms.retune.baselines")
