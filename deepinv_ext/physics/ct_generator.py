"""Deprecated: moved to :mod:`deepinv_ext.physics.generator.ct`."""

from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.physics.generator.ct")
