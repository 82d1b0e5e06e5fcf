r"""Physics (forward operators) as :class:`deepinv.physics.LinearPhysics` subclasses, laid out as deepinv's.

- Operators, here: :class:`AstraCT` (2D CT through ASTRA), :class:`SigpyMultiCoilMRI` (multi-coil MRI through
  SigPy's NUFFT) and :func:`estimate_coil_maps` (ESPIRiT sensitivities for it).
- Split operators, :mod:`deepinv_ext.physics.split`: an :class:`AstraCT` by views, a :class:`SigpyMultiCoilMRI` by
  coils, into blocks built one per device or process (:func:`view_blocks`, :func:`coil_blocks`, for
  :mod:`deepinv.distributed`), and back to one operator for solvers (:class:`ConcatenatedLinearPhysics`).
- Generators, :mod:`deepinv_ext.physics.generator`: random acquisition parameters per sample
  (:class:`RandomViewsGenerator`, :class:`RadialTrajectoryGenerator`, :class:`SpiralTrajectoryGenerator`).
- Compute kernels, :mod:`deepinv_ext.physics.functional`: filtered back-projection, sparse system matrices, the NUFFT,
  k-space trajectories and density compensation.
"""

from deepinv_ext.physics.astra_ct import AstraCT
from deepinv_ext.physics.coil_maps import estimate_coil_maps
from deepinv_ext.physics.generator import (
    RadialTrajectoryGenerator,
    RandomViewsGenerator,
    SpiralTrajectoryGenerator,
)
from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI
from deepinv_ext.physics.split import (
    ConcatenatedLinearPhysics,
    PhysicsBlocks,
    coil_blocks,
    split_coils,
    split_fbp,
    split_views,
    view_blocks,
)

__all__ = ["AstraCT", "RandomViewsGenerator", "SigpyMultiCoilMRI", "estimate_coil_maps", "RadialTrajectoryGenerator",
           "SpiralTrajectoryGenerator", "ConcatenatedLinearPhysics", "PhysicsBlocks", "coil_blocks", "split_coils",
           "split_fbp", "split_views", "view_blocks"]
