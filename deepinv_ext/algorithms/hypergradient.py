r"""Certified inexact hypergradients for bilevel learning: the a-posteriori bound (:class:`HypergradientBound`) used by
the adaptive method :class:`~deepinv_ext.algorithms.MAID` :footcite:p:`salehi2024adaptively`.

For the bilevel problem of :class:`~deepinv_ext.algorithms.BilevelReconstructor`, with a lower-level energy
:math:`E_\theta` that is :math:`\mu`-strongly convex in :math:`x`, an approximate minimiser :math:`\tilde x` with
residual :math:`\|\nabla E_\theta(\tilde x)\|` is within :math:`\varepsilon = \|\nabla E_\theta(\tilde x)\|/\mu` of
:math:`\hat x`, and an approximate :math:`q` with :math:`\|\nabla^2 E_\theta(\tilde x) q - \nabla\ell(\tilde x)\|
= \delta` gives the hypergradient :math:`z = -J(\tilde x)^\top q`, :math:`J = \partial_\theta\nabla_x E_\theta`. Its
error is bounded a posteriori (the derivation of :footcite:t:`ehrhardt2023analyzing`, with the constants below):

.. math::

    \|z - \nabla f(\theta)\| \le \frac{\|J(\tilde x)\|}{\mu}\Big(\delta + \varepsilon\big(L_\ell + L_H Q\big)\Big)
    + L_J\, \varepsilon\, Q, \qquad Q = \frac{\|\nabla\ell(\tilde x)\| + L_\ell\varepsilon}{\mu}
    \ge \|\nabla^2 E_\theta(\hat x)^{-1}\nabla\ell(\hat x)\|,

where :math:`L_\ell, L_H, L_J` are Lipschitz constants of :math:`\nabla\ell`, :math:`\nabla_x^2 E_\theta` and
:math:`J` in :math:`x`. The upper-level loss itself is known to within
:math:`|\ell(\tilde x) - \ell(\hat x)| \le \|\nabla\ell(\tilde x)\|\varepsilon + L_\ell\varepsilon^2/2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_ext._validation import finite_number, positive_int

__all__ = ["Hypergradient", "HypergradientBound", "mixed_derivative_norm"]


@dataclass
class HypergradientBound:
    r"""The constants of the a-posteriori hypergradient bound of the module docstring.

    :param float strong_convexity: :math:`\mu > 0`, a lower bound of :math:`\nabla_x^2 E_\theta` (e.g. 1 for
        denoising with a convex regulariser).
    :param float loss_lipschitz: :math:`L_\ell`, the Lipschitz constant of :math:`\nabla\ell` (:math:`1/B` for
        :meth:`MAID.loss` on a batch of :math:`B`).
    :param float hessian_lipschitz: :math:`L_H`, of :math:`x \mapsto \nabla_x^2 E_\theta(x)` (0 for a quadratic
        energy).
    :param float mixed_lipschitz: :math:`L_J`, of :math:`x \mapsto \partial_\theta\nabla_x E_\theta(x)`.

    |sep|

    :Examples:

    >>> from deepinv_ext.algorithms import HypergradientBound
    >>> bound = HypergradientBound(strong_convexity=1.0, loss_lipschitz=1.0)
    >>> bound(eps=0.0, delta=0.1, loss_grad_norm=1.0, mixed_norm=2.0)       # ||J|| delta / mu
    0.2
    """

    strong_convexity: float
    loss_lipschitz: float = 1.0
    hessian_lipschitz: float = 0.0
    mixed_lipschitz: float = 0.0

    @classmethod
    def total_variation_denoising(cls, lam: float, weight: float, smoothing: float,
                                  batch: int) -> HypergradientBound:
        r"""The constants of learning :math:`\rho = \log\lambda` in smoothed-TV denoising,
        :math:`E(x) = \frac12\|x - y\|^2 + \lambda w \sum \phi_s(Dx)`,
        :math:`\phi_s(t) = \sqrt{t^2 + s^2} - s` (:meth:`deepinv_ext.priors.SparsifyingFilterBank.total_variation`,
        filters frozen), with :math:`\ell` of :meth:`~deepinv_ext.algorithms.MAID.loss`: :math:`\mu = 1`,
        :math:`L_\ell = 1/B`, :math:`J = \lambda\nabla R` so :math:`L_J = \lambda w \|D\|^2 \max\phi_s'' =
        8\lambda w/s`, and :math:`L_H = \lambda w \|D\|^3 \max|\phi_s^{(3)}| = \lambda w\, 8^{3/2}\,
        \frac{3/2}{(5/4)^{5/2}}\, s^{-2}` (the maximum of :math:`|\phi_s^{(3)}|` is at :math:`t = s/2`).

        :param float lam: the current :math:`\lambda`.
        :param float weight: the filter bank's weight :math:`w`.
        :param float smoothing: :math:`s > 0`.
        :param int batch: :math:`B`.
        :return: the constants.

        |sep|

        :Examples:

        >>> from deepinv_ext.algorithms import HypergradientBound
        >>> bound = HypergradientBound.total_variation_denoising(lam=0.1, weight=1.0, smoothing=0.5, batch=2)
        >>> bound.strong_convexity, bound.loss_lipschitz, round(bound.mixed_lipschitz, 6)
        (1.0, 0.5, 1.6)
        """
        scale = finite_number(lam, "lam", strict=True) * finite_number(weight, "weight", strict=True)
        s = finite_number(smoothing, "smoothing", strict=True)
        return cls(1.0, loss_lipschitz=1.0 / positive_int(batch, "batch"),
                   hessian_lipschitz=scale * 8**1.5 * 1.5 / 1.25**2.5 / s**2, mixed_lipschitz=scale * 8 / s)

    def __post_init__(self) -> None:
        finite_number(self.strong_convexity, "strong_convexity", strict=True)
        for name in ("loss_lipschitz", "hessian_lipschitz", "mixed_lipschitz"):
            finite_number(getattr(self, name), name)

    def __call__(self, eps: float, delta: float, loss_grad_norm: float, mixed_norm: float) -> float:
        r"""The bound on :math:`\|z - \nabla f(\theta)\|`.

        :param float eps: :math:`\varepsilon`, the bound on :math:`\|\tilde x - \hat x\|`.
        :param float delta: :math:`\delta`, the residual of the adjoint solve.
        :param float loss_grad_norm: :math:`\|\nabla\ell(\tilde x)\|`.
        :param float mixed_norm: :math:`\|J(\tilde x)\|`, the operator norm of the mixed derivative.
        :return: the bound, a float.
        """
        mu = self.strong_convexity
        q = (loss_grad_norm + self.loss_lipschitz * eps) / mu
        return mixed_norm * (delta + eps * (self.loss_lipschitz + self.hessian_lipschitz * q)) / mu \
            + self.mixed_lipschitz * eps * q

    def loss_error(self, eps: float, loss_grad_norm: float) -> float:
        r"""The bound :math:`\|\nabla\ell(\tilde x)\|\varepsilon + L_\ell\varepsilon^2/2` on
        :math:`|\ell(\tilde x) - \ell(\hat x)|`.

        :param float eps: :math:`\varepsilon`.
        :param float loss_grad_norm: :math:`\|\nabla\ell(\tilde x)\|`.
        :return: the bound, a float.
        """
        return loss_grad_norm * eps + 0.5 * self.loss_lipschitz * eps * eps


def mixed_derivative_norm(grad: Tensor, params: list[Tensor], iterations: int = 20) -> float:
    r""":math:`\|J\|` for :math:`J = \partial_\theta g`, the Jacobian of ``grad`` :math:`= g(\theta)` in the
    parameters, by power iteration on :math:`J^\top J` (exact for one scalar parameter; otherwise an estimate from
    below that converges with ``iterations``).

    :param torch.Tensor grad: :math:`g`, computed with a graph from ``params``.
    :param list[torch.Tensor] params: the parameters :math:`\theta`.
    :param int iterations: power iterations.
    :return: the norm, a float.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.algorithms import mixed_derivative_norm
    >>> theta = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> grad = torch.stack([3 * theta[0], 4 * theta[1], theta[0]])      # J = [[3, 0], [0, 4], [1, 0]]
    >>> round(mixed_derivative_norm(grad, [theta]), 4)
    4.0
    """
    u0 = torch.zeros_like(grad, requires_grad=True)
    jt_u0 = torch.autograd.grad(grad, params, u0, create_graph=True, retain_graph=True, allow_unused=True)
    used = [(p, t) for p, t in zip(params, jt_u0) if t is not None and t.requires_grad]  # J's nonzero columns
    if not used:
        return 0.0
    params, jt_u0 = [p for p, _ in used], [t for _, t in used]
    generator = torch.Generator(device=grad.device).manual_seed(0)
    v = [torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) for p in params]
    norm = 0.0
    for _ in range(positive_int(iterations, "iterations")):
        scale = math.sqrt(sum(float(t.pow(2).sum()) for t in v))
        if scale == 0.0:  # J^T J v = 0: J is zero along everything tried
            return 0.0
        v = [t / scale for t in v]
        (jv,) = torch.autograd.grad(jt_u0, u0, v, retain_graph=True)
        norm = float(jv.norm())
        v = list(torch.autograd.grad(grad, params, jv, retain_graph=True))
    return norm


@dataclass
class Hypergradient:
    r"""An inexact hypergradient and what certifies it (:meth:`MAID.hypergradient`).

    :param torch.Tensor grad: :math:`z`, flat, in the order of the parameters.
    :param float loss: :math:`\ell(\tilde x)`.
    :param torch.Tensor x: :math:`\tilde x`.
    :param float eps: :math:`\varepsilon = \|\nabla E(\tilde x)\|/\mu`.
    :param float delta: the adjoint residual :math:`\delta`.
    :param float bound: the bound on :math:`\|z - \nabla f\|`.
    :param float loss_grad_norm: :math:`\|\nabla\ell(\tilde x)\|`.
    :param int lower_iterations: lower-level iterations spent.
    :param int cg_iterations: conjugate-gradient iterations spent.

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound
    >>> model = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=0.5).double()
    >>> maid = MAID(model, HypergradientBound(1.0, loss_lipschitz=1.0, mixed_lipschitz=0.5), eps=1e-8, delta=1e-8)
    >>> x_true = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    >>> hg = maid.hypergradient(2 * x_true, dinv.physics.Denoising(), x_true)   # x = 2/(1 + lam) = 4/3
    >>> round(hg.loss, 6), round(hg.grad.item(), 6), hg.bound < 1e-6    # d loss / d log lam = -8/27 * 16 * lam
    (0.888889, -2.37037, True)
    """

    grad: Tensor
    loss: float
    x: Tensor
    eps: float
    delta: float
    bound: float
    loss_grad_norm: float
    lower_iterations: int
    cg_iterations: int
