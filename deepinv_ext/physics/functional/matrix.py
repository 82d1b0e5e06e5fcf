r"""The largest eigenvalue of a symmetric positive semi-definite operator by power iteration, from a given start.

deepinv's :func:`deepinv.physics.functional.power_method` (what :meth:`deepinv.physics.LinearPhysics.compute_sqnorm`
runs) draws its start from the global random generator (deepinv 0.5's ``compute_sqnorm`` takes an ``rng`` that it
does not use), so a reproducible norm would need the global seed set. :func:`power_method` runs the same iteration
from a start the caller draws (from a :class:`torch.Generator` of its own), with the same stopping rule, so that the
same start gives the same numbers as deepinv's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["power_method"]


def power_method(operator: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, max_iter: int = 100,
                 tol: float = 1e-6) -> torch.Tensor:
    r"""The largest eigenvalue :math:`\lambda_{\max}` of a symmetric positive semi-definite linear ``operator``
    :math:`M` (e.g. :math:`A^\top A`, giving :math:`\|A\|_2^2`), by power iteration started at ``x0``.

    .. math::

        x_{k+1} = \frac{M x_k}{\|M x_k\|}, \qquad z_k = \frac{\langle x_k, M x_k\rangle}{\|x_k\|^2},

    stopped when :math:`|z_k - z_{k-1}| < \mathrm{tol}` (deepinv's rule; a :class:`UserWarning` when ``max_iter``
    iterations do not reach it). ``x0`` must not be orthogonal to the leading eigenvector: a Gaussian random start
    is not, with probability one.

    :param Callable operator: :math:`x \mapsto Mx`.
    :param torch.Tensor x0: the start (its values are used; deepinv's function draws its own).
    :param int max_iter: maximum number of iterations.
    :param float tol: absolute tolerance on the change of the estimate.
    :return: (:class:`torch.Tensor`) the estimate of :math:`\lambda_{\max}`, a real scalar.

    :Examples:

    >>> import torch
    >>> matrix = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    >>> start = torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> round(float(power_method(lambda x: matrix @ x, start, max_iter=200, tol=1e-10)), 6)
    3.0
    """
    x = x0 / torch.linalg.vector_norm(x0)
    zold = torch.zeros_like(x)
    for _ in range(max_iter):
        y = operator(x)
        z = torch.vdot(x.flatten(), y.flatten()) / torch.linalg.vector_norm(x) ** 2
        if torch.linalg.vector_norm(z - zold) < tol:
            break
        zold = z
        x = y / torch.linalg.vector_norm(y)
    else:
        warnings.warn("Power iteration: convergence not reached", stacklevel=2)
    return z.real
