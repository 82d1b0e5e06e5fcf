r"""How far a linear operator given as a matvec is from symmetric, measured on random probes.

The matrix functions and spectral filters of :mod:`deepinv_ext.spectral` assume a symmetric operator :math:`D`
(:math:`\langle x, Dy\rangle = \langle Dx, y\rangle` for all :math:`x, y`); a learned linear denoiser is symmetric by
construction at best, to rounding. :func:`symmetry_gap` measures the worst relative gap on a few random probe pairs,

.. math::

    \max_{k} \frac{|\langle x_k, D y_k\rangle - \langle D x_k, y_k\rangle|}{\|x_k\|\,\|D y_k\|},

which is zero for a symmetric operator and of the order of one for a generic one.
"""

from __future__ import annotations

import torch

from deepinv_ext.spectral.matrix_functions import Matvec

__all__ = ["symmetry_gap"]


def symmetry_gap(matvec: Matvec, shape: tuple[int, ...], *, n_probes: int = 3, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu", seed: int = 0) -> float:
    r"""Worst relative gap :math:`|\langle x, Dy\rangle - \langle Dx, y\rangle| / (\|x\|\|Dy\|)` over random
    probes (see the module docstring).

    The probes are drawn from a generator of their own, seeded with ``seed``; the global random state is untouched.
    The operator is applied without autograd.

    :param Callable matvec: the linear operator :math:`D` on batched tensors ``(B, *shape)``.
    :param tuple[int, ...] shape: the shape of one input, e.g. ``(1, 32, 32)``.
    :param int n_probes: number of probe pairs :math:`(x_k, y_k)`, standard Gaussian.
    :param torch.dtype dtype: precision of the probes.
    :param device: device of the probes.
    :param int seed: seed of the probes.
    :return: the worst relative gap (0 for a symmetric operator, to rounding).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.spectral import symmetry_gap
    >>> M = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> symmetry_gap(lambda v: v @ (M + M.T), (6,)) < 1e-14
    True
    >>> symmetry_gap(lambda v: v @ M, (6,)) > 1e-2
    True
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_probes, *shape, generator=g, dtype=dtype).to(device)
    y = torch.randn(n_probes, *shape, generator=g, dtype=dtype).to(device)
    with torch.no_grad():
        Dx, Dy = matvec(x), matvec(y)
    lhs, rhs = (x * Dy).flatten(1).sum(1), (Dx * y).flatten(1).sum(1)
    scale = x.flatten(1).norm(dim=1) * Dy.flatten(1).norm(dim=1)
    return float(((lhs - rhs).abs() / scale.clamp_min(1e-300)).max())
