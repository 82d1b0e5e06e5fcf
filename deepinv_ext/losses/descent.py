r"""Normalised gradient descent on a regulariser from artefact images: the images a variational solve may reach.

.. math::

    z_0 = z, \qquad z_{k+1} = z_k - \gamma\,\frac{\|z - x\|}{K}\,\frac{\nabla R(z_k)}{\|\nabla R(z_k)\|},
    \qquad k = 0, \dots, K - 1,

with :math:`x` the clean image of the artefact image :math:`z` and :math:`\gamma \sim U[0, 1]` per sample, so
that :math:`\|z_K - z\| \le \gamma\|z - x\|`. A regulariser trained on clean and artefact images alone can have
blind spots, images far from any clean one where it is small, which gradient descent on it finds; the losses
(:class:`deepinv_ext.losses.NETTLoss`, :class:`deepinv_ext.losses.WassersteinCriticLoss`, option
``descent_steps``) also train on :math:`z_K`, as adversarial training does for classifiers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_ext._validation import positive_int


def normalised_descent(regularizer: torch.nn.Module, start: Tensor, clean: Tensor, steps: int,
                       generator: torch.Generator | None = None) -> Tensor:
    r"""The end points :math:`z_K` (detached) of ``steps`` normalised gradient steps on ``regularizer``.

    :param torch.nn.Module regularizer: has ``grad(x)``, :math:`\nabla R` per batch element.
    :param torch.Tensor start: the artefact images :math:`z`, shape ``(B, ...)``.
    :param torch.Tensor clean: their clean images :math:`x` (the scale of the steps), same shape.
    :param int steps: :math:`K \ge 1`.
    :param torch.Generator generator: random source of :math:`\gamma` (default: torch's global one).
    :raises ValueError: ``steps`` not an integer >= 1.
    """
    positive_int(steps, "steps")
    shape = (start.shape[0],) + (1,) * (start.ndim - 1)
    gamma = torch.rand(shape, generator=generator, dtype=start.dtype).to(start.device)
    length = gamma * (start - clean).flatten(1).norm(dim=1).reshape(shape) / steps
    z = start.detach()
    for _ in range(steps):
        g = regularizer.grad(z)
        z = (z - length * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(shape)).detach()
    return z
