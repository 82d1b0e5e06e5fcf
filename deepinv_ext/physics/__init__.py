r"""Physics (forward operators) as :class:`deepinv.physics.LinearPhysics` subclasses, laid out as deepinv's.

- Operators, here: :class:`AstraCT` (2D CT through ASTRA), :class:`SigpyMultiCoilMRI` (multi-coil MRI through
  SigPy's NUFFT) and :func:`estimate_coil_maps` (ESPIRiT sensitivities for it).
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

__all__ = ["AstraCT", "RandomViewsGenerator", "SigpyMultiCoilMRI", "estimate_coil_maps", "RadialTrajectoryGenerator",
           "SpiralTrajectoryGenerator"]
