r"""Parametrised fixed-point layers :math:`x_{k+1} = T_\theta(x_k; y)` for :class:`deepinv_ext.algorithms.ReTune`.

A layer is one iteration of a fixed-point scheme whose parameters :math:`\theta` are shared by every layer of the
unrolled network. The layers here are forward-backward (proximal gradient) steps on
:math:`f(x) = \tfrac12 \|Ax - y\|^2` (deepinv's :class:`deepinv.optim.L2` data fidelity):

.. math::

    T_\theta(x) = P_\theta\big(x - \gamma A^\top (A x - y)\big),

with :math:`P_\theta = \operatorname{prox}_{\gamma\lambda g}` for a proximal prior (:class:`ForwardBackwardLayer`)
or a denoiser :math:`D_\sigma` (plug-and-play, :class:`PnPForwardBackwardLayer`), or gradient steps on
:math:`f + \lambda g` for a smooth learned prior such as TDV or AR (:class:`GradientStepLayer`). The step is learned in
:math:`(0, 2/\beta)` with :math:`\beta \ge \|A\|^2` given by the user (``data_lipschitz``), so that for a convex
prior the gradient step is nonexpansive and the layer is averaged (hence its iterates converge); it is a
contraction when :math:`A^\top A \succ 0` (denoising, invertible blur).

Every layer is a :class:`FixedPointLayer` (what :class:`~deepinv_ext.algorithms.ReTune` iterates); the two
forward-backward layers are also :class:`ProximalGradientLayer` (their backward step can be handed to deepinv's
optimisers).

Reference: M. Davy, L. Briceño-Arias, N. Pustelnik, "Restarted contractive operators to learn at equilibrium",
arXiv:2506.13239.
"""

from __future__ import annotations

import abc
import math

import deepinv as dinv
import torch

from deepinv_ext._validation import boolean, finite_number

__all__ = ["FixedPointLayer", "ProximalGradientLayer", "ForwardBackwardLayer", "PnPForwardBackwardLayer",
           "GradientStepLayer", "AnchoredLayer"]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _open_interval(value: float, name: str, high: float = 1.0, high_name: str = "1") -> float:
    """``value`` as a float if it is a number in :math:`(0, \\text{high})`, otherwise a ValueError naming ``name``."""
    value = finite_number(value, name, strict=True)
    if not value < high:
        raise ValueError(f"{name} must lie in (0, {high_name}) = (0, {high:g}), got {value}")
    return value


def _set_trainable(module, trainable: bool) -> None:
    """Freeze or unfreeze the weights of ``module`` (a plain callable has none)."""
    if isinstance(module, torch.nn.Module):
        module.requires_grad_(trainable)


class FixedPointLayer(torch.nn.Module, abc.ABC):
    r"""Base class of a ReTune layer: ``forward(x, y, physics)`` is one iteration :math:`T_\theta(x; y)`.

    Subclasses implement :meth:`forward` and may override :meth:`init` (default: :math:`A^\top y`) and
    :meth:`lipschitz_bound` (an analytical upper bound on the Lipschitz constant in :math:`x`, or ``None``).
    :class:`~deepinv_ext.algorithms.ReTune` and :class:`AnchoredLayer` accept instances of this class only.

    :Examples:

    >>> import deepinv as dinv, torch
    >>> class Halve(FixedPointLayer):
    ...     def forward(self, x, y, physics):
    ...         return 0.5 * (x + physics.A_adjoint(y))
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y = torch.ones(1, 1, 4, 4)
    >>> layer = Halve()
    >>> float(layer(layer.init(y, physics), y, physics).mean())
    1.0
    """

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r"""One iteration :math:`T_\theta(x; y)`, of the shape of ``x``."""

    def init(self, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r"""Initial iterate :math:`x_0 = A^\top y`."""
        return physics.A_adjoint(y)

    def lipschitz_bound(self) -> float | None:
        """An analytical upper bound on the Lipschitz constant of the layer in ``x`` (``None`` if unknown)."""
        return None


class _GradientStepMixin(FixedPointLayer):
    """Learned step :math:`\\gamma = (2/\\beta)\\,\\mathrm{sigmoid}(\\theta_\\gamma)` on the L2 data fidelity."""

    def _init_step(self, step: float, data_lipschitz: float, train_step: bool) -> None:
        self.data_lipschitz = finite_number(data_lipschitz, "data_lipschitz (an upper bound on ||A||^2)", strict=True)
        _open_interval(step, "step", 2.0 / self.data_lipschitz, "2/data_lipschitz")
        self.step_logit = torch.nn.Parameter(torch.tensor(_logit(step * self.data_lipschitz / 2.0)),
                                             requires_grad=boolean(train_step, "train_step"))
        self.data_fidelity = dinv.optim.L2()

    @property
    def step(self) -> torch.Tensor:
        r"""Step size :math:`\gamma \in (0, 2/\beta)`."""
        return 2.0 / self.data_lipschitz * torch.sigmoid(self.step_logit)

    def gradient_step(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        gamma = self.step.to(x.dtype)
        return x - gamma * self.data_fidelity.grad(x, y, physics)

    def _gradient_step_lipschitz(self) -> float:
        # ||I - gamma A^T A|| <= max(1, |1 - gamma beta|) for 0 <= A^T A <= beta
        return max(1.0, abs(1.0 - float(self.step.detach()) * self.data_lipschitz))


class ProximalGradientLayer(_GradientStepMixin):
    r"""Base class of a forward-backward layer :math:`T_\theta(x) = P_\theta\big(x - \gamma A^\top(Ax - y)\big)`: the
    learned gradient step on the L2 data fidelity, then a backward step :math:`P_\theta` (:meth:`proximal_step`: a
    proximal operator or a denoiser).

    Subclasses implement :meth:`proximal_step` and :meth:`forward`. Declaring the backward step lets deepinv's own
    optimisers run the layer: :class:`~deepinv_ext.algorithms.LayerProxPrior` hands :meth:`proximal_step` to
    ``PGD``, DEQ and ``unfolded_builder`` as a prior's ``prox`` (:func:`~deepinv_ext.algorithms.deq_baseline`).
    """

    @abc.abstractmethod
    def proximal_step(self, v: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        r"""The backward step :math:`P_\theta(v)` for the step size ``gamma``, of the shape of ``v``."""


class _WeightMixin(torch.nn.Module):
    r"""Learned regularisation weight :math:`\lambda = e^{\theta_\lambda}` (parameter ``log_lam``)."""

    def _init_lam(self, lam: float, train_lam: bool) -> None:
        lam = finite_number(lam, "lam", strict=True)
        self.log_lam = torch.nn.Parameter(torch.tensor(math.log(lam)), requires_grad=boolean(train_lam, "train_lam"))

    @property
    def lam(self) -> torch.Tensor:
        r"""Regularisation weight :math:`\lambda > 0`."""
        return self.log_lam.exp()


class ForwardBackwardLayer(_WeightMixin, ProximalGradientLayer):
    r"""Forward-backward layer with a proximal prior:
    :math:`T_\theta(x) = \operatorname{prox}_{\gamma\lambda g}(x - \gamma A^\top(Ax - y))`.

    Learned: the step :math:`\gamma \in (0, 2/\beta)`, the regularisation weight :math:`\lambda = e^{\theta_\lambda}`
    and the prior's own parameters (e.g. the band weights of :class:`deepinv_ext.priors.WaveletL1Prior`). For a
    convex :math:`g` the layer is averaged (nonexpansive), and its fixed points are the minimisers of
    :math:`\tfrac12\|Ax-y\|^2 + \lambda g(x)`.

    :param deepinv.optim.Prior prior: a prior with ``prox(x, *args, gamma=...)``
        (:class:`deepinv_ext.priors.WaveletL1Prior`, deepinv's ``WaveletPrior``, ``TVPrior``, ...).
    :param float step: initial step size :math:`\gamma`.
    :param float lam: initial regularisation weight :math:`\lambda`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2` (1 for denoising, normalised blur).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_lam: learn :math:`\lambda`.
    """

    def __init__(self, prior: dinv.optim.Prior, step: float = 1.0, lam: float = 0.05, data_lipschitz: float = 1.0,
                 train_step: bool = True, train_lam: bool = True):
        super().__init__()
        if not isinstance(prior, dinv.optim.Prior):
            raise TypeError(f"prior must have a prox method (a deepinv.optim.Prior), got {type(prior)}")
        self.prior = prior
        self._init_step(step, data_lipschitz, train_step)
        self._init_lam(lam, train_lam)

    def proximal_step(self, v: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        r""":math:`\operatorname{prox}_{\gamma\lambda g}(v)` for the step ``gamma``."""
        return self.prior.prox(v, gamma=(gamma * self.lam).to(v.dtype))

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        return self.proximal_step(self.gradient_step(x, y, physics), self.step)

    def lipschitz_bound(self) -> float:
        """``max(1, |1 - gamma beta|)``: the prox is firmly nonexpansive, the gradient step has this norm."""
        return self._gradient_step_lipschitz()


class PnPForwardBackwardLayer(ProximalGradientLayer):
    r"""Plug-and-play forward-backward layer: :math:`T_\theta(x) = D_\sigma(x - \gamma A^\top(Ax - y))`.

    Learned: the step :math:`\gamma \in (0, 2/\beta)`, the denoiser's noise level :math:`\sigma = e^{\theta_\sigma}`
    and, when ``train_denoiser=True``, the denoiser's weights. A trained denoiser is not contractive by itself: keep
    the layer contractive with :class:`deepinv_ext.losses.LipschitzPenalty` (built on deepinv's
    :class:`deepinv.loss.JacobianSpectralNorm`) or wrap it in :class:`AnchoredLayer` (a contraction whenever the
    layer's constant is below :math:`1/(1-c)`), and check it with :func:`deepinv_ext.algorithms.layer_lipschitz`.

    :param deepinv.models.Denoiser denoiser: any deepinv denoiser ``denoiser(x, sigma)``.
    :param float step: initial step size :math:`\gamma`.
    :param float sigma: initial denoiser noise level :math:`\sigma`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2`.
    :param float relaxation: if given, a learned relaxation :math:`\alpha \in (0,1)` initialised there, and the
        layer is :math:`(1-\alpha) v + \alpha D_\sigma(v)` with :math:`v` the gradient step (it tunes the strength of
        a blind denoiser such as DnCNN, and shrinks the Lipschitz constant of an expansive one).
    :param bool train_denoiser: train the denoiser's weights (else they are frozen: ``requires_grad=False``).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_sigma: learn :math:`\sigma` (and :math:`\alpha`).
    """

    def __init__(self, denoiser: torch.nn.Module, step: float = 1.0, sigma: float = 0.05,
                 data_lipschitz: float = 1.0, relaxation: float | None = None, train_denoiser: bool = False,
                 train_step: bool = True, train_sigma: bool = True):
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be a callable deepinv Denoiser, got {type(denoiser)}")
        sigma = finite_number(sigma, "sigma", strict=True)
        train_sigma = boolean(train_sigma, "train_sigma")
        self.denoiser = denoiser
        _set_trainable(denoiser, boolean(train_denoiser, "train_denoiser"))
        self._init_step(step, data_lipschitz, train_step)
        self.log_sigma = torch.nn.Parameter(torch.tensor(math.log(sigma)), requires_grad=train_sigma)
        if relaxation is not None:
            _open_interval(relaxation, "relaxation")
        self.relaxation_logit = (None if relaxation is None
                                 else torch.nn.Parameter(torch.tensor(_logit(relaxation)), requires_grad=train_sigma))

    @property
    def sigma(self) -> torch.Tensor:
        r"""Denoiser noise level :math:`\sigma > 0`."""
        return self.log_sigma.exp()

    @property
    def relaxation(self) -> torch.Tensor | None:
        r"""Relaxation :math:`\alpha \in (0, 1)` (``None``: no relaxation, :math:`\alpha = 1`)."""
        return None if self.relaxation_logit is None else torch.sigmoid(self.relaxation_logit)

    def proximal_step(self, v: torch.Tensor, gamma: float | torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`(1-\alpha) v + \alpha D_\sigma(v)` (``gamma`` is unused: a denoiser has no step)."""
        out = self.denoiser(v, self.sigma.to(v.dtype))
        alpha = self.relaxation
        return out if alpha is None else v + alpha.to(v.dtype) * (out - v)

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        return self.proximal_step(self.gradient_step(x, y, physics))


class GradientStepLayer(_WeightMixin, _GradientStepMixin):
    r"""Gradient-descent layer on :math:`\tfrac12\|Ax-y\|^2 + \lambda g(x)` for a smooth (learned) prior:
    :math:`T_\theta(x) = x - \gamma\big(A^\top(Ax - y) + \lambda \nabla g(x)\big)`.

    For TDV, AR/ACR or any :class:`deepinv.optim.Prior` with ``grad``. Learned: :math:`\gamma \in (0, 2/\beta)`,
    :math:`\lambda = e^{\theta_\lambda}` and, with ``train_prior=True``, the prior's weights. Its fixed points are the
    critical points of the energy; for a convex :math:`L_g`-smooth :math:`g` the layer is nonexpansive when
    :math:`\gamma \le 2/(\beta + \lambda L_g)` (check with :func:`deepinv_ext.algorithms.layer_lipschitz`, or keep it
    contractive with :class:`deepinv_ext.losses.LipschitzPenalty`).

    :param deepinv.optim.Prior prior: a prior with ``grad(x)`` (deepinv's ``Tikhonov``, TDV, AR, ...).
    :param float step: initial step size :math:`\gamma`.
    :param float lam: initial regularisation weight :math:`\lambda`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2`.
    :param bool train_prior: train the prior's weights (else frozen).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_lam: learn :math:`\lambda`.
    """

    def __init__(self, prior: dinv.optim.Prior, step: float = 0.5, lam: float = 0.05, data_lipschitz: float = 1.0,
                 train_prior: bool = False, train_step: bool = True, train_lam: bool = True):
        super().__init__()
        if not isinstance(prior, dinv.optim.Prior):
            raise TypeError(f"prior must have a grad method (a deepinv.optim.Prior), got {type(prior)}")
        self.prior = prior
        _set_trainable(prior, boolean(train_prior, "train_prior"))
        self._init_step(step, data_lipschitz, train_step)
        self._init_lam(lam, train_lam)

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        gamma, lam = self.step.to(x.dtype), self.lam.to(x.dtype)
        return x - gamma * (self.data_fidelity.grad(x, y, physics) + lam * self.prior.grad(x))


class AnchoredLayer(FixedPointLayer):
    r"""A layer made contractive by anchoring it to the initial iterate:
    :math:`T^c_\theta(x) = (1 - c)\, T_\theta(x) + c\, x_0(y)` with :math:`x_0 = A^\top y` (the inner layer's
    :meth:`~FixedPointLayer.init`).

    Its Lipschitz constant in :math:`x` is exactly :math:`(1 - c)\,\mathrm{Lip}(T_\theta)`: it is a contraction as
    soon as :math:`\mathrm{Lip}(T_\theta) < 1/(1-c)`, which leaves room for a trained denoiser that is slightly
    expansive (forward-backward on a blur is only nonexpansive, :math:`\|I - \gamma A^\top A\| = 1`, so a PnP layer
    is a contraction only if the denoiser is one). The fixed point moves towards :math:`x_0`; training at
    equilibrium (ReTune) learns the inner layer for the anchored fixed point, so the bias is trained away. It is the
    Halpern/Tikhonov-type anchoring of fixed-point theory, with a constant weight.

    :param FixedPointLayer layer: the inner layer :math:`T_\theta`.
    :param float contraction: the anchor weight :math:`c \in (0, 1)`.
    """

    def __init__(self, layer: FixedPointLayer, contraction: float = 0.1):
        super().__init__()
        if not isinstance(layer, FixedPointLayer):
            raise TypeError(f"layer must be a FixedPointLayer, got {type(layer)}")
        self.layer = layer
        self.contraction = _open_interval(contraction, "contraction")

    def init(self, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        return self.layer.init(y, physics)

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        c = self.contraction
        return (1.0 - c) * self.layer(x, y, physics) + c * self.layer.init(y, physics)

    def lipschitz_bound(self) -> float | None:
        """``(1 - c)`` times the inner layer's bound (``None`` if the inner bound is unknown)."""
        inner = self.layer.lipschitz_bound()
        return None if inner is None else (1.0 - self.contraction) * inner
