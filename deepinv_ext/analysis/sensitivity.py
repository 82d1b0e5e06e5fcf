r"""Sensitivity of a learned TDV flow to its parameters: the computable error bound of Theorem 3.2 of
:footcite:t:`kobler2020total`.

A :class:`~deepinv_ext.algorithms.TDVNetwork` with regulariser :math:`R_\theta`, stopping time :math:`T`, data
weight :math:`\lambda` and :math:`S` steps runs, from :math:`x_0` (``y`` for denoising, :math:`A^\top z` otherwise)
and in the domain rescaled to its training noise level (:math:`z = s\,y`, :math:`s = \sigma_0/\sigma`),

.. math::

    x_{k+1} = \Phi(x_k) := P_\tau\big(x_k - t\,\nabla R_\theta(x_k) + \tau A^\top z\big), \qquad
    t = \frac{T}{S},\quad \tau = \frac{\lambda}{S},\quad P_\tau = (\operatorname{Id} + \tau A^\top A)^{-1},

with :math:`\|P_\tau\| = 1/(1+\tau)` for denoising (:math:`A = \operatorname{Id}`) and :math:`\|P_\tau\| \le 1`
for any linear :math:`A` (equality when :math:`A` has a null space). Let a second network (:math:`\tilde\theta`,
:math:`\tilde T`, :math:`\tilde\lambda`, same :math:`S`, same :math:`\sigma_0`) run :math:`\tilde x_{k+1} =
\tilde\Phi(\tilde x_k)` from the same :math:`x_0` and :math:`z`. The error :math:`e_k = x_k - \tilde x_k` splits as

.. math::

    e_{k+1} = \big[\Phi(x_k) - \Phi(\tilde x_k)\big] + \big[\Phi(\tilde x_k) - \tilde x_{k+1}\big],

where the first bracket is :math:`P_\tau(e_k - t(\nabla R_\theta(x_k) - \nabla R_\theta(\tilde x_k)))` (the data
terms cancel) and the second, one step of the first network from the second one's state, has the computable norm
:math:`\delta_k = \|\Phi(\tilde x_k) - \tilde x_{k+1}\|`. With :math:`L` a Lipschitz constant of
:math:`\nabla R_\theta` on the pairs :math:`(x_k, \tilde x_k)` (the paper's (13)), the triangle inequality gives

.. math::

    \|e_{k+1}\| \le q\,\|e_k\| + \delta_k, \quad q = \|P_\tau\|(1 + tL), \qquad\text{so, as } e_0 = 0,\qquad
    \|e_k\| \le b_k := \sum_{r<k} q^{\,k-1-r}\,\delta_r

(a discrete Gronwall inequality, :func:`gronwall_bound`). It is an equality at the first step
(:math:`\|e_1\| = \delta_0`) and zero for two equal parameter sets. As the paper does, :math:`L` is estimated from
the sequences themselves: the largest secant ratio :math:`L_k = \|\nabla R_\theta(x_k) - \nabla R_\theta(\tilde
x_k)\| / \|x_k - \tilde x_k\|` over :math:`k < S`, one constant per image, which is exactly what each step of the
argument needs (a local Lipschitz constant along the two flows). Since step :math:`k` of the argument only uses
:math:`L_k`, the same recursion with the factors :math:`q_k = \|P_\tau\|(1 + tL_k)` is a tighter bound, as rigorous
(``bound_stepwise``); the theorem's form, one constant, is ``bound``. Tightest of all, step :math:`k` only needs
the expansion of the gradient step along the two flows, :math:`\rho_k = \|e_k - t(\nabla R_\theta(x_k) -
\nabla R_\theta(\tilde x_k))\| / \|e_k\| \le 1 + tL_k`, computable from the same sequences: the recursion
with :math:`q_k = \|P_\tau\|\rho_k` (``bound_local``) is as rigorous, and shows how much of the gap between a
bound and the observed error is the Lipschitz estimate :math:`1 + tL`, which ignores that a gradient step of a
regulariser that is locally convex contracts (:math:`\rho_k < 1`).

The paper's looser bound splits :math:`\delta_k` further into the differences of the parameters. Writing
:math:`\Phi = \operatorname{prox}_\tau \circ G_t` with the gradient step :math:`G_t(x) = x - t\nabla R_\theta(x)`
and the affine map :math:`\operatorname{prox}_\tau(u) = P_\tau(u + \tau A^\top z)`,

.. math::

    \delta_k \le \|P_\tau\|\big(|t - \tilde t|\,\|\nabla R_{\tilde\theta}(\tilde x_k)\|
    + t\,\|\nabla R_\theta(\tilde x_k) - \nabla R_{\tilde\theta}(\tilde x_k)\|\big)
    + \|\operatorname{prox}_\tau(\tilde G_{\tilde t}(\tilde x_k)) - \tilde x_{k+1}\|,

the last term being the difference of the two proximal maps at the second network's gradient step (zero when
:math:`\lambda = \tilde\lambda`); :func:`tdv_sensitivity` returns it as ``deltas_split`` and ``bound_split``.

All norms are reported in the units of the images (those of the rescaled domain divided by :math:`s`, which
scales the recursion linearly); the RMSE is the norm divided by :math:`\sqrt N`, :math:`N` the entries of an
image. Everything is computed under :func:`torch.no_grad`. The theorem is Theorem 3.2 (appendix Theorem C.3) of
:footcite:t:`kobler2020total`, whose Fig. 7 plots the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deepinv.physics import Denoising, Physics
from torch import Tensor

from deepinv_ext._batch import batch_norm, per_sample
from deepinv_ext._validation import check_tensor, finite_values
from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
from deepinv_ext.algorithms.tdv_network import TDVNetwork

__all__ = ["SensitivityBound", "gronwall_bound", "tdv_sensitivity"]


def gronwall_bound(deltas: Tensor, factors: Tensor | float) -> Tensor:
    r"""The bounds :math:`b_0 = 0`, :math:`b_{k+1} = q_k\,b_k + \delta_k` of any error obeying
    :math:`\|e_{k+1}\| \le q_k\|e_k\| + \delta_k` from :math:`e_0 = 0`; with a constant :math:`q`,
    :math:`b_k = \sum_{r<k} q^{k-1-r}\delta_r` (discrete Gronwall inequality).

    :param torch.Tensor deltas: :math:`\delta_0, \dots, \delta_{S-1}` along the first dimension, shape ``(S, ...)``
        (e.g. ``(S, B)``, one column per image), finite and :math:`\ge 0`.
    :param float, torch.Tensor factors: the factors :math:`q_k \ge 0`, a number or a tensor broadcasting against ``deltas`` (shape
        ``(B,)``: one constant per image; ``(S, B)``: one per step and image).
    :return: :math:`b_0, \dots, b_S`, shape ``(S + 1, ...)``, in the dtype of ``deltas``.
    :raises TypeError: ``deltas`` not a real floating tensor, ``factors`` neither a number nor a real tensor.
    :raises ValueError: ``deltas`` without a step dimension, negative or non-finite values, ``factors`` that do not
        broadcast against ``deltas``.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.analysis.sensitivity import gronwall_bound
    >>> gronwall_bound(torch.tensor([1.0, 1.0, 1.0]), 2.0).tolist()  # 0, 1, 2 + 1, 2 * 3 + 1
    [0.0, 1.0, 3.0, 7.0]
    """
    check_tensor(deltas, "deltas")
    if deltas.ndim == 0:
        raise ValueError("deltas must have a step dimension first, shape (S, ...), got a 0-dimensional tensor")
    finite_values(deltas, "deltas")
    finite_values(factors, "factors")
    try:
        q = torch.broadcast_to(torch.as_tensor(factors, dtype=deltas.dtype, device=deltas.device), deltas.shape)
    except RuntimeError as err:
        raise ValueError(f"factors of shape {tuple(torch.as_tensor(factors).shape)} do not broadcast against "
                         f"deltas of shape {tuple(deltas.shape)}") from err
    bounds = [torch.zeros_like(deltas[0])]
    for q_k, delta_k in zip(q, deltas):
        bounds.append(q_k * bounds[-1] + delta_k)
    return torch.stack(bounds)


@dataclass(frozen=True)
class SensitivityBound:
    r"""The observed difference of two TDV flows and its bound (:func:`tdv_sensitivity`), per step and image.

    Norms are in image units; ``B`` images, ``S`` steps; index ``k`` of a ``(S + 1, B)`` tensor is step :math:`k`
    (:math:`k = 0`: the common starting point).

    :param torch.Tensor observed: :math:`\|x_k - \tilde x_k\|`, shape ``(S + 1, B)``.
    :param torch.Tensor bound: :math:`b_k`, shape ``(S + 1, B)`` (:func:`gronwall_bound` of ``deltas`` and
        ``factor``).
    :param torch.Tensor bound_split: the looser bound from ``deltas_split``, shape ``(S + 1, B)``.
    :param torch.Tensor bound_stepwise: the tighter bound with each step's own secant :math:`L_k` in place of
        :math:`L`, shape ``(S + 1, B)``.
    :param torch.Tensor bound_local: the tightest bound, with the expansion :math:`\rho_k` of each gradient step
        in place of :math:`1 + tL`, shape ``(S + 1, B)``.
    :param torch.Tensor deltas: :math:`\delta_k = \|\Phi(\tilde x_k) - \tilde x_{k+1}\|`, shape ``(S, B)``.
    :param torch.Tensor deltas_split: the paper's split upper estimate of :math:`\delta_k`, shape ``(S, B)``.
    :param torch.Tensor secants: :math:`\|\nabla R_\theta(x_k) - \nabla R_\theta(\tilde x_k)\| / \|x_k - \tilde
        x_k\|` (0 where the states agree), shape ``(S, B)``.
    :param torch.Tensor expansions: :math:`\rho_k = \|e_k - t(\nabla R_\theta(x_k) - \nabla R_\theta(\tilde
        x_k))\| / \|e_k\|` (0 where the states agree), shape ``(S, B)``.
    :param torch.Tensor lipschitz: the estimate :math:`L` (the largest secant of each image), shape ``(B,)``.
    :param torch.Tensor factor: :math:`q = \|P_\tau\|(1 + tL)`, shape ``(B,)``.
    :param int pixels: :math:`N`, the entries of one image (for the RMSE).
    :param torch.Tensor x_a: the output :math:`x_S` of the reference network (image units), shape of an image batch.
    :param torch.Tensor x_b: the output :math:`\tilde x_S` of the other network.

    |sep|

    :Examples:

    Two TDV flows that differ in their stopping time only:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import TDVNetwork
    >>> from deepinv_ext.analysis import tdv_sensitivity
    >>> from deepinv_ext.priors import TDV
    >>> prior = TDV(num_features=4, num_macro_blocks=1)
    >>> net_a, net_b = (TDVNetwork(prior, steps=4, T=T, lmbda=0.5) for T in (0.02, 0.03))
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> res = tdv_sensitivity(net_a, net_b, physics(torch.rand(1, 1, 16, 16)), physics)
    >>> res.observed.shape, bool((res.bound_local <= res.bound * (1 + 1e-5)).all()), res.ratio.shape
    (torch.Size([5, 1]), True, torch.Size([4, 1]))
    """

    observed: Tensor
    bound: Tensor
    bound_split: Tensor
    bound_stepwise: Tensor
    bound_local: Tensor
    deltas: Tensor
    deltas_split: Tensor
    secants: Tensor
    expansions: Tensor
    lipschitz: Tensor
    factor: Tensor
    pixels: int
    x_a: Tensor
    x_b: Tensor

    @property
    def observed_rmse(self) -> Tensor:
        r"""The RMSE :math:`\|x_k - \tilde x_k\|/\sqrt N`, shape ``(S + 1, B)``."""
        return self.observed / self.pixels ** 0.5

    @property
    def bound_rmse(self) -> Tensor:
        r"""The bound in RMSE units, :math:`b_k/\sqrt N`, shape ``(S + 1, B)``."""
        return self.bound / self.pixels ** 0.5

    @property
    def ratio(self) -> Tensor:
        r"""The efficiency :math:`b_k/\|x_k - \tilde x_k\|` for :math:`k = 1, \dots, S` (1 at :math:`k = 1`,
        ``nan`` where the flows agree), shape ``(S, B)``."""
        return self.bound[1:] / self.observed[1:]


def _check_pair(net_a: TDVNetwork, net_b: TDVNetwork) -> None:
    for name, net in (("net_a", net_a), ("net_b", net_b)):
        if not isinstance(net, TDVNetwork):
            raise TypeError(f"{name} must be a deepinv_ext.algorithms.TDVNetwork, got {type(net).__name__}")
    if net_a.S != net_b.S:
        raise ValueError(f"the two networks must have the same number of steps S, got {net_a.S} and {net_b.S}")
    if net_a.sigma_train != net_b.sigma_train:
        raise ValueError("the two networks must share sigma_train (they run in the same rescaled domain), got "
                         f"{net_a.sigma_train} and {net_b.sigma_train}")


def _secant(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where ``den`` is 0 (equal states have equal gradients)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


@torch.no_grad()
def tdv_sensitivity(net_a: TDVNetwork, net_b: TDVNetwork, y: Tensor, physics: Physics,
                    sigma: float | Tensor | None = None, x_init: Tensor | None = None) -> SensitivityBound:
    r"""The difference of two TDV flows with the same data and start, and its computable bound, per step and image.

    Two flows :math:`x_{k+1} = \Phi(x_k) = P_\tau(x_k - t\nabla R_\theta(x_k) + \tau A^\top z)` and
    :math:`\tilde x_{k+1} = \tilde\Phi(\tilde x_k)` (:math:`t = T/S`, :math:`\tau = \lambda/S`,
    :math:`P_\tau = (\operatorname{Id} + \tau A^\top A)^{-1}`) from the same :math:`x_0` have, by Theorem 3.2 of
    :footcite:t:`kobler2020total` (a discrete Gronwall inequality, :func:`gronwall_bound`),

    .. math::

        \|x_k - \tilde x_k\| \le b_k = \sum_{r<k} q^{\,k-1-r}\,\delta_r, \qquad
        \delta_k = \|\Phi(\tilde x_k) - \tilde x_{k+1}\|, \quad q = \|P_\tau\|(1 + tL),

    with :math:`L` the largest secant ratio of :math:`\nabla R_\theta` along the two flows; the module
    :mod:`deepinv_ext.analysis.sensitivity` derives it and the tighter and looser variants.

    ``net_a`` is the reference (:math:`\theta, T, \lambda`): its :math:`\nabla R_\theta`, :math:`t` and
    :math:`\|P_\tau\|` enter the factor :math:`q`, so the bound is not symmetric in the two networks. For
    :class:`deepinv.physics.Denoising`, :math:`\|P_\tau\| = 1/(1+\tau)`; for any other linear physics the bound
    uses :math:`\|P_\tau\| \le 1` (and holds up to the conjugate-gradient tolerance where the proximal map is
    solved iteratively). The bound holds at every step up to rounding (at the first step it is an equality).

    :param deepinv_ext.algorithms.TDVNetwork net_a: the reference network.
    :param deepinv_ext.algorithms.TDVNetwork net_b: the other network, with the same ``S`` and ``sigma_train``.
    :param torch.Tensor y: measurements, as :meth:`TDVNetwork.forward <deepinv_ext.algorithms.TDVNetwork.forward>`
        takes them (a batch: one bound per image).
    :param deepinv.physics.LinearPhysics physics: the forward operator.
    :param float, torch.Tensor sigma: noise level of ``y`` for the rescaling (default: ``physics.noise_model.sigma``).
    :param torch.Tensor x_init: the common starting point (default: the networks' own).
    :return: a :class:`SensitivityBound`.
    :raises TypeError: a network that is not a :class:`~deepinv_ext.algorithms.TDVNetwork`, or the errors of
        :meth:`TDVNetwork.forward <deepinv_ext.algorithms.TDVNetwork.forward>`.
    :raises ValueError: networks with different ``S`` or ``sigma_train``, or the errors of the forward pass.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import TDVNetwork
    >>> from deepinv_ext.analysis.sensitivity import tdv_sensitivity
    >>> from deepinv_ext.priors import TDV
    >>> nets = []
    >>> for seed, T in ((0, 0.02), (1, 0.03)):
    ...     _ = torch.manual_seed(seed)
    ...     nets.append(TDVNetwork(TDV(num_features=4, num_macro_blocks=1), steps=5, T=T, lmbda=0.5))
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
    >>> y = physics(torch.rand(2, 1, 24, 24))
    >>> res = tdv_sensitivity(*nets, y, physics)
    >>> res.bound.shape, bool((res.bound >= res.observed).all()), torch.allclose(res.ratio[0], torch.ones(2))
    (torch.Size([6, 2]), True, True)
    """
    _check_pair(net_a, net_b)
    xs_a = net_a(y, physics, x_init=x_init, sigma=sigma, return_all=True)
    xs_b = net_b(y, physics, x_init=x_init, sigma=sigma, return_all=True)
    scale = net_a.noise_scale(y, physics, sigma)
    scale = torch.ones(y.shape[0], dtype=y.dtype, device=y.device) if scale is None else scale
    z = y * per_sample(scale, y)
    outputs = xs_a[-1], xs_b[-1]
    xs_a, xs_b = ([x * per_sample(scale, x) for x in xs] for xs in (xs_a, xs_b))  # back to the flows' domain
    t_a, t_b = net_a.T.to(y.dtype) / net_a.S, net_b.T.to(y.dtype) / net_b.S
    tau_a = net_a.lmbda.to(y.dtype) / net_a.S
    p_norm = 1 / (1 + tau_a) if isinstance(physics, Denoising) else torch.ones_like(tau_a)
    deltas, splits, secants, expansions = [], [], [], []
    for x, xt, xt_next in zip(xs_a[:-1], xs_b[:-1], xs_b[1:]):
        grad_a, grad_b = net_a.R.grad(xt), net_b.R.grad(xt)
        deltas.append(batch_norm(net_a.step(xt, z, physics, grad=grad_a) - xt_next))
        prox_gap = prox_data_fidelity(xt - t_b * grad_b, z, physics, tau_a, net_a.cg_max_iter, net_a.cg_tol) - xt_next
        splits.append(p_norm * ((t_a - t_b).abs() * batch_norm(grad_b) + t_a * batch_norm(grad_a - grad_b))
                      + batch_norm(prox_gap))
        grad_gap, gap = net_a.R.grad(x) - grad_a, batch_norm(x - xt)
        secants.append(_secant(batch_norm(grad_gap), gap))
        expansions.append(_secant(batch_norm(x - xt - t_a * grad_gap), gap))
    deltas, splits = torch.stack(deltas) / scale, torch.stack(splits) / scale
    secants, expansions = torch.stack(secants), torch.stack(expansions)
    lipschitz = secants.max(dim=0).values
    factor = p_norm * (1 + t_a * lipschitz)
    observed = torch.stack([batch_norm(a - b) for a, b in zip(xs_a, xs_b)]) / scale
    return SensitivityBound(observed=observed, bound=gronwall_bound(deltas, factor),
                            bound_split=gronwall_bound(splits, factor),
                            bound_stepwise=gronwall_bound(deltas, p_norm * (1 + t_a * secants)),
                            bound_local=gronwall_bound(deltas, p_norm * expansions),
                            deltas=deltas, deltas_split=splits, secants=secants, expansions=expansions,
                            lipschitz=lipschitz, factor=factor, pixels=xs_a[0][0].numel(),
                            x_a=outputs[0], x_b=outputs[1])
