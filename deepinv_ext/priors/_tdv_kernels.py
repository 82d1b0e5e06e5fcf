r"""The elementwise and padding kernels of the Total Deep Variation network (:class:`deepinv_ext.priors.TDV`).

- :func:`symmetric_pad` and its adjoint :func:`symmetric_pad_adjoint`: numpy's ``mode="symmetric"`` padding of the
  authors' convolutions, and the fold of the mirrored borders back onto the image that the hand-derived gradient
  needs;
- :func:`student_t`: the log-Student-t activation :math:`\phi(u) = \tfrac12\log(1 + u^2)` of the micro-blocks
  together with its derivative :math:`\phi'(u) = u / (1 + u^2)`, which the reverse sweep reuses; under autograd it
  saves only :math:`u` (its backward is written out), so that training through the gradient keeps one tensor per
  activation.

|sep|

:Examples:

>>> import torch
>>> from deepinv_ext.priors.tdv import symmetric_pad, symmetric_pad_adjoint
>>> x, y = torch.randn(1, 1, 5, 6, dtype=torch.float64), torch.randn(1, 1, 9, 10, dtype=torch.float64)
>>> symmetric_pad(x, 2).shape
torch.Size([1, 1, 9, 10])
>>> bool(torch.isclose((symmetric_pad(x, 2) * y).sum(), (x * symmetric_pad_adjoint(y, 2)).sum()))
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["student_t", "symmetric_pad", "symmetric_pad_adjoint"]


def symmetric_pad(x: Tensor, p: int) -> Tensor:
    r"""Pad the last two dimensions by ``p`` on every side, mirroring with the edge pixel repeated (numpy's
    ``mode="symmetric"``); for ``p = 1`` this is replicate padding.

    :param torch.Tensor x: images ``(..., H, W)`` with :math:`H, W \ge p`.
    :param int p: the padding width (>= 0).
    :return: ``(..., H + 2p, W + 2p)``.
    """
    if p == 0:
        return x
    if p == 1:
        return F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)


def symmetric_pad_adjoint(y: Tensor, p: int) -> Tensor:
    r"""Adjoint of :func:`symmetric_pad`: the mirrored borders are folded back onto the image and added.

    :param torch.Tensor y: padded images ``(..., H + 2p, W + 2p)`` with :math:`H, W \ge 2p`.
    :param int p: the padding width (>= 0).
    :return: ``(..., H, W)``.
    """
    if p == 0:
        return y
    y = torch.cat([y[..., p:2 * p, :] + y[..., :p, :].flip(-2), y[..., 2 * p:-2 * p, :],
                   y[..., -2 * p:-p, :] + y[..., -p:, :].flip(-2)], dim=-2)
    return torch.cat([y[..., p:2 * p] + y[..., :p].flip(-1), y[..., 2 * p:-2 * p],
                      y[..., -2 * p:-p] + y[..., -p:].flip(-1)], dim=-1)


class _StudentT(torch.autograd.Function):
    r""":math:`(\phi(u), \phi'(u))` with :math:`\phi(u) = \frac12\log(1+u^2)`, saving only :math:`u`."""

    @staticmethod
    def forward(ctx, u: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(u)
        return _student_t_eval(u)

    @staticmethod
    def backward(ctx, g_phi: Tensor, g_dphi: Tensor) -> Tensor:
        (u,) = ctx.saved_tensors
        d = 1 + u * u
        return g_phi * u / d + g_dphi * (1 - u * u) / (d * d)


def _student_t_eval(u: Tensor) -> tuple[Tensor, Tensor]:
    d = u * u
    d += 1
    da = u / d
    a = torch.log(d)
    a *= 0.5
    return a, da


def student_t(u: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`(\phi(u), \phi'(u)) = (\tfrac12\log(1 + u^2),\ u / (1 + u^2))`, elementwise.

    Under autograd (``u`` requires grad) through :class:`_StudentT`, which saves only :math:`u`; otherwise without
    autograd's bookkeeping, updating its own temporaries in place.

    :param torch.Tensor u: the pre-activations.
    :return: :math:`(\phi(u), \phi'(u))`, each of the shape of ``u``.
    """
    if torch.is_grad_enabled() and u.requires_grad:
        return _StudentT.apply(u)
    return _student_t_eval(u)
