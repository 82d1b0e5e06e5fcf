r"""Physics (forward operators) as :class:`deepinv.physics.LinearPhysics` subclasses, and their generators."""

from deepinv_ext.physics.astra_ct import AstraCT
from deepinv_ext.physics.coil_maps import estimate_coil_maps
from deepinv_ext.physics.ct_generator import RandomViewsGenerator
from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI
from deepinv_ext.physics.trajectories import RadialTrajectoryGenerator, SpiralTrajectoryGenerator

__all__ = ["AstraCT", "RandomViewsGenerator", "SigpyMultiCoilMRI", "estimate_coil_maps", "RadialTrajectoryGenerator",
           "SpiralTrajectoryGenerator"]
