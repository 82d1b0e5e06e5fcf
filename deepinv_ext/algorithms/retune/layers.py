r"""Fixed-point layers :math:`x_{k+1} = T_\theta(x_k; y)` for :class:`deepinv_ext.algorithms.ReTune`
:footcite:p:`davy2025restarted`: forward-backward, gradient-step and anchored layers."""

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

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> class Halve(FixedPointLayer):
    ...     def forward(self, x, y, physics):
    ...         return 0.5 * (x + physics.A_adjoint(y))
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y, layer = torch.ones(1, 1, 4, 4), Halve()
    >>> float(layer(layer.init(y, physics), y, physics).mean())
    1.0
    """

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r"""One iteration :math:`T_\theta(x; y)`, of the shape of ``x``.

        :param torch.Tensor x: the iterate :math:`x_k`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """

    def init(self, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r"""Initial iterate :math:`x_0 = A^\top y`.

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
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
    r"""Base class of a forward-backward layer :math:`T_\theta(x) = P_\theta\big(x - \gamma A^\top(Ax - y)\big)`,
    with :math:`P_\theta` (:meth:`proximal_step`) a proximal operator or a denoiser.

    The step is learned, :math:`\gamma = (2/\beta)\,\mathrm{sigmoid}(\theta_\gamma) \in (0, 2/\beta)` with
    :math:`\beta \ge \|A\|^2` given (``data_lipschitz``): the gradient step is nonexpansive,
    :math:`\|\mathrm{Id} - \gamma A^\top A\| \le 1`, so for the prox of a convex prior the layer is averaged and
    its iterates converge; it is a contraction when :math:`A^\top A \succ 0` (denoising, invertible blur).
    Subclasses implement :meth:`proximal_step` and :meth:`forward`; :class:`~deepinv_ext.algorithms.LayerProxPrior`
    hands :meth:`proximal_step` to deepinv's optimisers as a prior's ``prox``
    (:func:`~deepinv_ext.algorithms.deq_baseline`).

    |sep|

    :Examples:

    A :class:`ForwardBackwardLayer` is the backward step after the gradient step:

    >>> import torch, deepinv as dinv
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y = physics(torch.rand(1, 1, 16, 16))
    >>> from deepinv_ext.algorithms import ForwardBackwardLayer
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> x = torch.rand(1, 1, 16, 16)
    >>> v = x - layer.step * physics.A_adjoint(physics.A(x) - y)
    >>> torch.allclose(layer(x, y, physics), layer.proximal_step(v, layer.step))
    True
    """

    @abc.abstractmethod
    def proximal_step(self, v: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        r"""The backward step :math:`P_\theta(v)` for the step size ``gamma``, of the shape of ``v``.

        :param torch.Tensor v: the output of the gradient step.
        :param float, torch.Tensor gamma: the step size :math:`\gamma`.
        """


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

    Learned: :math:`\gamma \in (0, 2/\beta)`, :math:`\lambda = e^{\theta_\lambda}` and the prior's own parameters.
    For a convex :math:`g` the layer is averaged and its fixed points minimise :math:`\tfrac12\|Ax-y\|^2 + \lambda g`.

    :param deepinv.optim.Prior prior: a prior with ``prox(x, *args, gamma=...)``
        (:class:`deepinv_ext.priors.WaveletL1Prior`, deepinv's ``WaveletPrior``, ``TVPrior``, ...).
    :param float step: initial step size :math:`\gamma`.
    :param float lam: initial regularisation weight :math:`\lambda`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2` (1 for denoising, normalised blur).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_lam: learn :math:`\lambda`.

    |sep|

    :Examples:

    >>> from deepinv_ext.algorithms import ForwardBackwardLayer
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> round(layer.step.item(), 4), round(layer.lam.item(), 4), layer.lipschitz_bound()
    (1.0, 0.05, 1.0)
    >>> sorted(name for name, p in layer.named_parameters() if p.requires_grad)
    ['log_lam', 'prior.log_weight', 'step_logit']
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
        r""":math:`\operatorname{prox}_{\gamma\lambda g}(v)` for the step ``gamma``.

        :param torch.Tensor v: the output of the gradient step.
        :param float, torch.Tensor gamma: the step size :math:`\gamma`.
        """
        return self.prior.prox(v, gamma=(gamma * self.lam).to(v.dtype))

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r""":math:`\operatorname{prox}_{\gamma\lambda g}(x - \gamma A^\top(Ax - y))`.

        :param torch.Tensor x: the iterate :math:`x_k`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
        return self.proximal_step(self.gradient_step(x, y, physics), self.step)

    def lipschitz_bound(self) -> float:
        """``max(1, |1 - gamma beta|)``: the prox is firmly nonexpansive, the gradient step has this norm."""
        return self._gradient_step_lipschitz()


class PnPForwardBackwardLayer(ProximalGradientLayer):
    r"""Plug-and-play forward-backward layer: :math:`T_\theta(x) = D_\sigma(x - \gamma A^\top(Ax - y))`.

    Learned: the step :math:`\gamma \in (0, 2/\beta)`, the denoiser's noise level :math:`\sigma = e^{\theta_\sigma}`
    and, with ``train_denoiser=True``, its weights. A trained denoiser is not contractive by itself: train with
    :class:`deepinv_ext.losses.LipschitzPenalty` or wrap the layer in :class:`AnchoredLayer`, and check it with
    :func:`deepinv_ext.algorithms.layer_lipschitz`.

    :param deepinv.models.Denoiser denoiser: any deepinv denoiser ``denoiser(x, sigma)``.
    :param float step: initial step size :math:`\gamma`.
    :param float sigma: initial denoiser noise level :math:`\sigma`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2`.
    :param float relaxation: if given, a learned :math:`\alpha \in (0,1)` initialised there: the layer is then
        :math:`(1-\alpha) v + \alpha D_\sigma(v)`, :math:`v` the gradient step (tunes a blind denoiser's strength).
    :param bool train_denoiser: train the denoiser's weights (else they are frozen: ``requires_grad=False``).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_sigma: learn :math:`\sigma` (and :math:`\alpha`).

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y = physics(torch.rand(1, 1, 16, 16))
    >>> from deepinv_ext.algorithms import PnPForwardBackwardLayer
    >>> layer = PnPForwardBackwardLayer(dinv.models.TVDenoiser(n_it_max=10), sigma=0.1, relaxation=0.5)
    >>> sorted(name for name, p in layer.named_parameters() if p.requires_grad)
    ['log_sigma', 'relaxation_logit', 'step_logit']
    >>> layer(physics.A_adjoint(y), y, physics).shape
    torch.Size([1, 1, 16, 16])
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
        r""":math:`(1-\alpha) v + \alpha D_\sigma(v)`.

        :param torch.Tensor v: the output of the gradient step.
        :param float, torch.Tensor gamma: unused (a denoiser has no step).
        """
        out = self.denoiser(v, self.sigma.to(v.dtype))
        alpha = self.relaxation
        return out if alpha is None else v + alpha.to(v.dtype) * (out - v)

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r""":math:`(1-\alpha) v + \alpha D_\sigma(v)` with :math:`v = x - \gamma A^\top(Ax - y)`.

        :param torch.Tensor x: the iterate :math:`x_k`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
        return self.proximal_step(self.gradient_step(x, y, physics))


class GradientStepLayer(_WeightMixin, _GradientStepMixin):
    r"""Gradient-descent layer on :math:`\tfrac12\|Ax-y\|^2 + \lambda g(x)` for a smooth (learned) prior:
    :math:`T_\theta(x) = x - \gamma\big(A^\top(Ax - y) + \lambda \nabla g(x)\big)`.

    Learned: :math:`\gamma`, :math:`\lambda = e^{\theta_\lambda}` and (``train_prior=True``) the prior's weights. Its
    fixed points are the critical points of the energy; for a convex :math:`L_g`-smooth :math:`g` it is nonexpansive
    when :math:`\gamma \le 2/(\beta + \lambda L_g)` (check with :func:`deepinv_ext.algorithms.layer_lipschitz`).

    :param deepinv.optim.Prior prior: a prior with ``grad(x)`` (deepinv's ``Tikhonov``, TDV, AR, ...).
    :param float step: initial step size :math:`\gamma`.
    :param float lam: initial regularisation weight :math:`\lambda`.
    :param float data_lipschitz: upper bound :math:`\beta` on :math:`\|A\|^2`.
    :param bool train_prior: train the prior's weights (else frozen).
    :param bool train_step: learn :math:`\gamma`.
    :param bool train_lam: learn :math:`\lambda`.

    |sep|

    :Examples:

    With the Tikhonov prior :math:`g(x) = \frac12\|x\|^2` on denoising, the fixed point is :math:`y/(1 + \lambda)`:

    >>> import torch, deepinv as dinv
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> y = physics(torch.rand(1, 1, 16, 16))
    >>> from deepinv_ext.algorithms import GradientStepLayer
    >>> layer = GradientStepLayer(dinv.optim.Tikhonov(), step=0.5, lam=0.1)
    >>> x = layer.init(y, physics)
    >>> for _ in range(60):
    ...     x = layer(x, y, physics)
    >>> torch.allclose(x, y / (1 + layer.lam), atol=1e-6)
    True
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
        r""":math:`x - \gamma\big(A^\top(Ax - y) + \lambda \nabla g(x)\big)`.

        :param torch.Tensor x: the iterate :math:`x_k`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
        gamma, lam = self.step.to(x.dtype), self.lam.to(x.dtype)
        return x - gamma * (self.data_fidelity.grad(x, y, physics) + lam * self.prior.grad(x))


class AnchoredLayer(FixedPointLayer):
    r"""A layer made contractive by anchoring it to its initial iterate :math:`x_0(y)` (e.g. :math:`A^\top y`):
    :math:`T^c_\theta(x) = (1 - c)\, T_\theta(x) + c\, x_0(y)`.

    Its Lipschitz constant in :math:`x` is :math:`(1 - c)\,\mathrm{Lip}(T_\theta)`: a contraction as soon as
    :math:`\mathrm{Lip}(T_\theta) < 1/(1-c)`, room for a slightly expansive trained denoiser (on a blur,
    forward-backward is only nonexpansive). The fixed point moves towards :math:`x_0`; training at equilibrium learns
    the inner layer for the anchored fixed point (Halpern-type anchoring with a constant weight).

    :param FixedPointLayer layer: the inner layer :math:`T_\theta`.
    :param float contraction: the anchor weight :math:`c \in (0, 1)`.

    |sep|

    :Examples:

    >>> from deepinv_ext.algorithms import AnchoredLayer, ForwardBackwardLayer
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)    # nonexpansive: bound 1
    >>> AnchoredLayer(layer, contraction=0.1).lipschitz_bound()
    0.9
    """

    def __init__(self, layer: FixedPointLayer, contraction: float = 0.1):
        super().__init__()
        if not isinstance(layer, FixedPointLayer):
            raise TypeError(f"layer must be a FixedPointLayer, got {type(layer)}")
        self.layer = layer
        self.contraction = _open_interval(contraction, "contraction")

    def init(self, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r"""The inner layer's initial iterate :math:`x_0(y)`, also the anchor.

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
        return self.layer.init(y, physics)

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        r""":math:`(1 - c)\, T_\theta(x) + c\, x_0(y)`.

        :param torch.Tensor x: the iterate :math:`x_k`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator :math:`A`.
        """
        c = self.contraction
        return (1.0 - c) * self.layer(x, y, physics) + c * self.layer.init(y, physics)

    def lipschitz_bound(self) -> float | None:
        """``(1 - c)`` times the inner layer's bound (``None`` if the inner bound is unknown)."""
        inner = self.layer.lipschitz_bound()
        return None if inner is None else (1.0 - self.contraction) * inner
