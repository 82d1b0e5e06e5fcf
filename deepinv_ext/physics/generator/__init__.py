r"""Physics generators of :mod:`deepinv_ext.physics`, as in :mod:`deepinv.physics.generator`: random acquisition
parameters, one per sample, for ``deepinv.Trainer(online_measurements=True, physics_generator=...)`` and
:func:`deepinv.datasets.generate_dataset`.

- CT: random subsets of the views (:class:`RandomViewsGenerator`, :mod:`~deepinv_ext.physics.generator.ct`).
- MRI: randomly rotated radial and spiral trajectories (:class:`RadialTrajectoryGenerator`,
  :class:`SpiralTrajectoryGenerator`, :mod:`~deepinv_ext.physics.generator.mri`).
"""

from deepinv_ext.physics.generator.ct import RandomViewsGenerator
from deepinv_ext.physics.generator.mri import RadialTrajectoryGenerator, SpiralTrajectoryGenerator

__all__ = ["RadialTrajectoryGenerator", "RandomViewsGenerator", "SpiralTrajectoryGenerator"]
