r"""Matrix functions of a symmetric operator given only as a matvec, and spectral filters for linear denoisers.

For a symmetric operator :math:`D` (a linear denoiser, ``matvec(v) = D v`` on batched tensors ``(B, ...)``):

- :mod:`~deepinv_ext.spectral.matrix_functions`: :math:`h(D)\,v` for a scalar function :math:`h`, exactly
  (:class:`OperatorEig`, small images) or matrix-free (:func:`lanczos_apply`, :func:`chebyshev_apply`,
  :func:`cg_solve`), each with its cost and error estimate (:class:`ApplyInfo`); the extreme eigenvalues
  (:func:`lanczos_extreme`);
- :mod:`~deepinv_ext.spectral.filters`: the spectral filters :math:`h_\tau` of :footcite:t:`hauptmann2024convergent`
  (:class:`ScalingFilter`, :class:`NeumannFilter`, base :class:`SpectralFilter`) and the check of their conditions
  A.1-A.3 (:class:`FilterConditions`);
- :mod:`~deepinv_ext.spectral.symmetry`: how far an operator is from symmetric (:func:`symmetry_gap`).
"""

from deepinv_ext.spectral.filters import FilterConditions, NeumannFilter, ScalingFilter, SpectralFilter
from deepinv_ext.spectral.matrix_functions import (
    ApplyInfo,
    OperatorEig,
    cg_solve,
    chebyshev_apply,
    lanczos_apply,
    lanczos_extreme,
)
from deepinv_ext.spectral.symmetry import symmetry_gap

__all__ = ["ApplyInfo", "OperatorEig", "lanczos_apply", "lanczos_extreme", "chebyshev_apply", "cg_solve",
           "SpectralFilter", "ScalingFilter", "NeumannFilter", "FilterConditions", "symmetry_gap"]
