"""Deprecated: split into :mod:`deepinv_ext.physics.functional.trajectories` (radial and spiral trajectories),
:mod:`deepinv_ext.physics.functional.density` (density compensation) and :mod:`deepinv_ext.physics.generator.mri`
(the trajectory generators)."""

from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.physics.functional.trajectories",
                           "deepinv_ext.physics.functional.density", "deepinv_ext.physics.generator.mri")
