"""Deprecated: moved to :mod:`deepinv_ext.physics.functional.fbp`."""

from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.physics.functional.fbp")
