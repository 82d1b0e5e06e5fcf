r"""Physics (forward operators) as :class:`deepinv.physics.LinearPhysics` subclasses."""

from deepinv_ext.physics.astra_ct import AstraCT
from deepinv_ext.physics.ct_generator import RandomViewsGenerator

__all__ = ["AstraCT", "RandomViewsGenerator"]
