r"""Compute kernels of the physics of :mod:`deepinv_ext.physics`, as in :mod:`deepinv.physics.functional`: plain
functions on torch tensors that the operators are built from, usable on their own.

- CT: filtered back-projection (:mod:`~deepinv_ext.physics.functional.fbp`), ASTRA system matrices as torch sparse
  operators with their disk and memory caches (:mod:`~deepinv_ext.physics.functional.system_matrix`).
- MRI: SigPy's NUFFT as differentiable batched torch functions (:mod:`~deepinv_ext.physics.functional.nufft`),
  radial and spiral k-space trajectories (:mod:`~deepinv_ext.physics.functional.trajectories`), their density
  compensation (:mod:`~deepinv_ext.physics.functional.density`), and torch tensors to and from SigPy's arrays
  (:mod:`~deepinv_ext.physics.functional.sigpy_arrays`).
- Any linear operator: the power method from a given start (:mod:`~deepinv_ext.physics.functional.matrix`).
"""

from deepinv_ext.physics.functional.density import pipe_menon_dcf, radial_dcf
from deepinv_ext.physics.functional.fbp import FILTERS, fan_beam_fbp, filter_sinogram, fourier_filter
from deepinv_ext.physics.functional.matrix import power_method
from deepinv_ext.physics.functional.nufft import nufft, nufft_adjoint
from deepinv_ext.physics.functional.sigpy_arrays import to_array, to_tensor
from deepinv_ext.physics.functional.system_matrix import (
    CacheWrittenWarning,
    SystemMatrix,
    clear_cache,
    default_cache_dir,
    load_or_build,
    shared_matrix,
    view_index,
    view_matrix,
)
from deepinv_ext.physics.functional.trajectories import GOLDEN_ANGLE, radial_trajectory, spiral_trajectory

__all__ = ["FILTERS", "GOLDEN_ANGLE", "CacheWrittenWarning", "SystemMatrix", "clear_cache", "default_cache_dir",
           "fan_beam_fbp", "filter_sinogram", "fourier_filter", "load_or_build", "nufft", "nufft_adjoint",
           "pipe_menon_dcf", "power_method", "radial_dcf", "radial_trajectory", "shared_matrix", "spiral_trajectory",
           "to_array", "to_tensor", "view_index", "view_matrix"]
