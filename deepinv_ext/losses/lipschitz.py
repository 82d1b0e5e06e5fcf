r"""A contractivity penalty for layers trained at equilibrium (ReTune, deep equilibrium models).

A fixed-point layer :math:`T_\theta` trained at equilibrium needs to stay a contraction: the fixed point exists and
is unique, the restarted iteration converges to it, and the Jacobian-free gradient is accurate (its relative error
is at most :math:`\rho^L`, see :mod:`deepinv_ext.algorithms.retune.jacobian`). :class:`LipschitzPenalty` is a
:class:`deepinv.loss.Loss` that penalises the spectral norm of the layer's Jacobian above :math:`1 - \varepsilon`, as :footcite:t:`pesquet2021learning` do.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch

from deepinv_ext._validation import finite_number, positive_int

__all__ = ["LipschitzPenalty"]


class LipschitzPenalty(dinv.loss.Loss):
    r"""Contractivity penalty on a ReTune layer, for ``deepinv.Trainer(losses=[SupLoss(), LipschitzPenalty()])``.

    .. math::

        \mathcal{P}(\theta) = \mu \, \max\big(\|\partial_x T_\theta(\hat x)\|_2 - (1 - \varepsilon), 0\big)^2,

    with the spectral norm computed by deepinv's :class:`deepinv.loss.JacobianSpectralNorm` (power iteration,
    differentiable in :math:`\theta`) at the detached network output :math:`\hat x` (close to the fixed point),
    as in :footcite:t:`pesquet2021learning`. The last estimate is kept in ``last_lipschitz`` (logged by the Trainer under the
    class name together with the penalty).

    :param float weight: :math:`\mu`.
    :param float eps: margin :math:`\varepsilon`; the penalty is active when the constant exceeds :math:`1-\varepsilon`.
    :param int max_iter: power iterations of :class:`deepinv.loss.JacobianSpectralNorm`.
    :param int reduced_batchsize: evaluate on the first samples of the batch only (``None``: all; only with a
        physics shared by the whole batch).
    :param torch.nn.Module layer: the layer to penalise (default: ``model.iteration`` of the model being trained).

    |sep|

    :Examples:

    A forward-backward layer with step :math:`\gamma = 1/2` on denoising is :math:`1/2`-Lipschitz: no penalty.

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, ReTune
    >>> from deepinv_ext.losses import LipschitzPenalty
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> model = ReTune(ForwardBackwardLayer(WaveletL1Prior(level=1), step=0.5), depth=2, restarts=1)
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y = torch.rand(2, 1, 8, 8)
    >>> penalty = LipschitzPenalty(weight=1.0, eps=0.05)
    >>> loss = penalty(x_net=model(y, physics), y=y, physics=physics, model=model)
    >>> loss.tolist(), round(penalty.last_lipschitz, 3)
    ([0.0, 0.0], 0.5)
    """

    def __init__(self, weight: float = 1e-2, eps: float = 0.05, max_iter: int = 10,
                 reduced_batchsize: int | None = None, layer: torch.nn.Module | None = None):
        super().__init__()
        self.weight = finite_number(weight, "weight")
        self.eps = finite_number(eps, "eps", maximum=1.0)
        positive_int(max_iter, "max_iter")
        self.reduced_batchsize = None if reduced_batchsize is None else positive_int(reduced_batchsize,
                                                                                     "reduced_batchsize")
        self.spectral_norm = dinv.loss.JacobianSpectralNorm(max_iter=max_iter, tol=1e-3, eval_mode=False,
                                                            reduction="max")
        self.last_lipschitz = float("nan")
        self.layer = layer

    def forward(self, x_net: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics,
                model: torch.nn.Module, **kwargs) -> torch.Tensor:
        r"""The penalty :math:`\mathcal{P}(\theta)`, repeated for every sample, shape ``(B,)``.

        :param torch.Tensor x_net: the network output :math:`\hat x`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the physics.
        :param torch.nn.Module model: the trained model (its ``iteration`` is the default layer).
        :param kwargs: ignored (the signature of :class:`deepinv.loss.Loss`).
        """
        layer = self.layer if self.layer is not None else getattr(model, "iteration", None)
        if layer is None:
            raise TypeError(f"model must be a ReTune (with an `iteration` layer), got {type(model)}")
        n = x_net.shape[0] if self.reduced_batchsize is None else self.reduced_batchsize
        x = x_net[:n].detach().requires_grad_(True)
        out = layer(x, y[:n], physics)
        norm = self.spectral_norm(out, x)
        self.last_lipschitz = float(norm.detach())
        if not math.isfinite(self.last_lipschitz):  # a layer constant in x (zero Jacobian) makes the power step 0/0
            return torch.zeros(x_net.shape[0], dtype=x_net.dtype, device=x_net.device)
        penalty = self.weight * torch.relu(norm - (1.0 - self.eps)) ** 2
        return penalty.expand(x_net.shape[0])
