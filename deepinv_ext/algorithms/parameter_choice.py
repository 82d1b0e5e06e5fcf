r"""A-priori parameter-choice rules :math:`\lambda(\delta)` for variational regularisation.

The convergent-regularisation survey (Fig. 2) treats the weight :math:`\lambda` of a fixed learned regulariser
:math:`g_\sigma` in :math:`f + \lambda g_\sigma` as the regularisation parameter and chooses it from the noise level
:math:`\delta` by the affine rule

.. math::

    \lambda(\delta) = c\,\delta + \varepsilon, \qquad c \ge 0,\ \varepsilon > 0.

As :math:`\delta \to 0`, :math:`\lambda(\delta) \to \varepsilon`: the reconstructions are expected to converge to
the solution :math:`x^\dagger_\varepsilon` of the noiseless problem at :math:`\lambda = \varepsilon` (not to an
:math:`g`-minimising solution of :math:`Ax = y`, which would need :math:`\lambda \to 0` with
:math:`\delta^2/\lambda \to 0`; the small :math:`\varepsilon` keeps the limit problem well posed).

Reference: A. Hauptmann, S. Mukherjee, C.-B. Schönlieb, F. Sherry, "Convergent regularization in inverse problems
and linear plug-and-play denoisers", Found. Comput. Math. (2024), Fig. 2 (:math:`c = 0.04` per percent of the pixel
range, :math:`\varepsilon = 10^{-4}`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["AffineParameterRule"]


@dataclass(frozen=True)
class AffineParameterRule:
    r"""The a-priori rule :math:`\lambda(\delta) = c\,\delta + \varepsilon`.

    :param float c: slope :math:`c \ge 0` (per unit of :math:`\delta`; :math:`\delta` in the units of the
        images, e.g. a standard deviation on :math:`[0, 1]` images: the survey's :math:`c = 0.04` per percent of
        the range is ``c=4.0`` here).
    :param float eps: floor :math:`\varepsilon > 0`, the limit of :math:`\lambda` as :math:`\delta \to 0`.

    :Examples:

    >>> rule = AffineParameterRule(c=4.0, eps=1e-4)
    >>> round(rule(0.01), 6)
    0.0401
    """

    c: float = 4.0
    eps: float = 1e-4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.c) and self.c >= 0):
            raise ValueError(f"c must be a finite number >= 0, got {self.c}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {self.eps}")

    def __call__(self, delta: float | torch.Tensor) -> float | torch.Tensor:
        r""":math:`\lambda(\delta)` for a noise level :math:`\delta \ge 0` (float, or a tensor elementwise)."""
        if isinstance(delta, torch.Tensor):
            if not (torch.isfinite(delta).all() and (delta >= 0).all()):
                raise ValueError("delta must be finite and >= 0")
            return self.c * delta + self.eps
        delta = float(delta)
        if not (math.isfinite(delta) and delta >= 0):
            raise ValueError(f"delta must be a finite number >= 0, got {delta}")
        return self.c * delta + self.eps

    @property
    def limit(self) -> float:
        r""":math:`\lim_{\delta \to 0} \lambda(\delta) = \varepsilon`."""
        return self.eps
