r"""Baselines of the ReTune experiments, built on the same layer so that only the training scheme differs.

- :func:`standard_unrolling`: :math:`L` layers with full backpropagation, no restarts (``ReTune(restarts=0)``),
  evaluated at depth :math:`L` (``inference="unrolled"``) or at its fixed point.
- :func:`full_unrolling`: :math:`(R+1)L` layers with full backpropagation: the memory ceiling of ReTune.
- :func:`deq_baseline`: deepinv's own deep equilibrium model, :class:`deepinv.optim.PGD` with
  ``DEQ=DEQConfig(jacobian_free=True)`` (a bare ``jacobian_free=True`` keyword is silently ignored by deepinv 0.5),
  whose proximal step is the layer's own (:class:`LayerProxPrior`).
- :func:`untrained`: the layer with its initial parameters, iterated to its fixed point (untrained PnP when the
  layer is a :class:`PnPForwardBackwardLayer` with a pretrained denoiser).
"""

from __future__ import annotations

import copy

import deepinv as dinv
import torch

from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.algorithms.retune.layers import FixedPointLayer, ProximalGradientLayer
from deepinv_ext.algorithms.retune.model import ReTune

__all__ = ["LayerProxPrior", "standard_unrolling", "full_unrolling", "deq_baseline", "untrained"]


class LayerProxPrior(dinv.optim.Prior):
    r"""The proximal part :math:`P_\theta` of a forward-backward ReTune layer as a deepinv prior, so that deepinv's
    optimisers (``PGD``, DEQ, ``unfolded_builder``) iterate :math:`P_\theta(x - \gamma \nabla f(x))` with their own
    step :math:`\gamma`. The layer's parameters (except its unused step) are registered and trained.

    :param ProximalGradientLayer layer: a forward-backward layer (its ``proximal_step(v, gamma)`` is the prox).

    |sep|

    :Examples:

    The prox of a :class:`~deepinv_ext.algorithms.ForwardBackwardLayer` is its prior's, weighted by the layer's
    :math:`\lambda`:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, LayerProxPrior
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> x = torch.rand(1, 1, 16, 16)
    >>> torch.allclose(LayerProxPrior(layer).prox(x, gamma=0.5), layer.prior.prox(x, gamma=0.5 * layer.lam))
    True
    """

    def __init__(self, layer: ProximalGradientLayer):
        super().__init__()
        if not isinstance(layer, ProximalGradientLayer):
            raise TypeError(f"layer must define proximal_step(v, gamma), got {type(layer)}")
        self.layer = layer
        self.explicit_prior = False

    def prox(self, x: torch.Tensor, *args, gamma: float | torch.Tensor = 1.0, **kwargs) -> torch.Tensor:
        r"""The layer's backward step :math:`P_\theta(x)` with deepinv's step ``gamma``.

        :param torch.Tensor x: the point.
        :param args: ignored (deepinv's prior signature).
        :param float, torch.Tensor gamma: the step size :math:`\gamma`.
        :param kwargs: ignored (deepinv's prior signature).
        """
        gamma = gamma if isinstance(gamma, torch.Tensor) else torch.tensor(float(gamma), device=x.device)
        return self.layer.proximal_step(x, gamma)


def standard_unrolling(layer: FixedPointLayer, depth: int, **kwargs) -> ReTune:
    r"""Standard unrolling: :math:`L` layers, full backpropagation, evaluated at depth :math:`L`.

    :param FixedPointLayer layer: the layer :math:`T_\theta`.
    :param int depth: the number of layers :math:`L`.
    :param kwargs: further arguments of :class:`~deepinv_ext.algorithms.ReTune` (``inference`` defaults to
        ``"unrolled"``).
    :return: ``ReTune(layer, depth, restarts=0, ...)``.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, standard_unrolling
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> model = standard_unrolling(layer, depth=5)
    >>> model.restarts, model.inference
    (0, 'unrolled')
    """
    kwargs.setdefault("inference", "unrolled")
    return ReTune(layer, depth=depth, restarts=0, **kwargs)


def full_unrolling(layer: FixedPointLayer, depth: int, restarts: int, **kwargs) -> ReTune:
    r"""Full unrolling of :math:`(R+1)L` layers with backpropagation through all of them: the memory ceiling of
    ReTune's :math:`R` restarts of :math:`L` layers.

    :param FixedPointLayer layer: the layer :math:`T_\theta`.
    :param int depth: :math:`L`.
    :param int restarts: :math:`R`.
    :param kwargs: further arguments of :class:`~deepinv_ext.algorithms.ReTune` (``inference`` defaults to
        ``"unrolled"``).
    :return: ``ReTune(layer, depth=(R+1)L, restarts=0, ...)``.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, full_unrolling
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> full_unrolling(layer, depth=5, restarts=3).depth
    20
    """
    kwargs.setdefault("inference", "unrolled")
    depth, restarts = positive_int(depth, "depth"), positive_int(restarts, "restarts", minimum=0)
    return ReTune(layer, depth=(restarts + 1) * depth, restarts=0, **kwargs)


def deq_baseline(layer: ProximalGradientLayer, *, max_iter: int = 200, tol: float = 1e-5) -> dinv.optim.PGD:
    r"""deepinv's Jacobian-free DEQ on the layer: ``PGD(L2(), LayerProxPrior(layer), DEQ=DEQConfig(jacobian_free=True))``.

    The forward pass iterates to the fixed point (``early_stop`` on the relative residual ``tol``, at most
    ``max_iter`` iterations) without gradients, then one iteration with gradients; deepinv's step size is
    trainable and initialised at the layer's step.

    :param ProximalGradientLayer layer: a forward-backward layer (deep-copied: the baseline trains its own
        parameters).
    :param int max_iter: maximum fixed-point iterations.
    :param float tol: relative residual of the fixed-point iteration.
    :return: the :class:`deepinv.optim.PGD` model, called as ``model(y, physics)``.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, deq_baseline
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> model = deq_baseline(layer, max_iter=50)
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> model(physics(torch.rand(1, 1, 16, 16)), physics).shape
    torch.Size([1, 1, 16, 16])
    """
    positive_int(max_iter, "max_iter")
    finite_number(tol, "tol", strict=True)
    prior = LayerProxPrior(copy.deepcopy(layer))
    return dinv.optim.PGD(data_fidelity=dinv.optim.L2(), prior=prior, stepsize=float(prior.layer.step.detach()),
                          lambda_reg=1.0, max_iter=int(max_iter), crit_conv="residual", thres_conv=float(tol),
                          early_stop=True, trainable_params=["stepsize"],
                          DEQ=dinv.optim.DEQConfig(jacobian_free=True))


def untrained(layer: FixedPointLayer, *, tol: float = 1e-5, max_restarts: int = 1000, depth: int = 10) -> ReTune:
    r"""The layer with its current (initial) parameters, frozen and iterated to its fixed point.

    :param FixedPointLayer layer: the layer (deep-copied, then frozen).
    :param float tol: the relative residual of the fixed-point iteration.
    :param int max_restarts: cap on the restarts.
    :param int depth: layers per restart.
    :return: a :class:`~deepinv_ext.algorithms.ReTune` in eval mode.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer, untrained
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> model = untrained(layer, depth=5)
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> x_hat = model(physics(torch.rand(1, 1, 16, 16)), physics)
    >>> model.converged.tolist(), any(p.requires_grad for p in model.parameters())
    ([True], False)
    """
    layer = copy.deepcopy(layer)
    for p in layer.parameters():
        p.requires_grad_(False)
    return ReTune(layer, depth=depth, restarts=0, tol=tol, max_restarts=max_restarts).eval()
