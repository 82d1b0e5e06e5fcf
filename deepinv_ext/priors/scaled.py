r"""A smooth learned prior times a regularisation weight, :math:`\lambda R`, itself a smooth learned prior.

A variational problem :math:`\min_x \frac12\|Ax - y\|_2^2 + \lambda R(x)` is solved by a solver of deepinv-ext
(:class:`deepinv_ext.algorithms.VariationalSolver`, data weight 1) given the prior :math:`\lambda R`.
:class:`ScaledPrior` is that prior: its energy, gradient and one-sweep ``energy_and_grad`` are those of :math:`R`
times :math:`\lambda` (so a hand-derived gradient, TDV's, is kept), and its proximal operator is the inner solve of
:class:`~deepinv_ext.priors.SmoothLearnedPrior` on

.. math::

    \operatorname{prox}_{\gamma \lambda R}(x) = \arg\min_u \tfrac12\|u - x\|_2^2 + \gamma\lambda R(u).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepinv_ext._validation import boolean, finite_number
from deepinv_ext.priors.smooth import ProxConfig, SmoothLearnedPrior
from deepinv_ext.priors.smooth_energy import check_fn_and_grad, energy_and_grad_of

__all__ = ["ScaledPrior"]


class ScaledPrior(SmoothLearnedPrior):
    r"""The prior :math:`\lambda R` for a smooth prior :math:`R` and a weight :math:`\lambda > 0`, fixed or learned.

    The prior :math:`R` is a submodule (``prior``): its parameters are this prior's, and its input check
    (:meth:`check_input`) is this prior's. With ``learn_lam=True`` the weight is learned too, as
    :math:`\lambda = e^{\rho}` with the parameter ``log_lam`` :math:`= \rho` (positive whatever the optimiser does):
    the regularisation weight that bilevel learning fits beside the prior's parameters
    (:class:`deepinv_ext.algorithms.BilevelReconstructor`).

    :param deepinv.optim.Prior prior: :math:`R`, a :class:`~deepinv_ext.priors.SmoothLearnedPrior` or any prior with
        ``fn`` (one value per batch element) and ``grad`` methods.
    :param float lam: the weight :math:`\lambda > 0`, finite (the initial value if learned).
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox` (default: those
        of ``prior`` if it has them, else :class:`~deepinv_ext.priors.ProxConfig`'s defaults).
    :param bool learn_lam: learn :math:`\lambda` (a parameter ``log_lam``, in the dtype of ``prior``'s parameters).
    :raises TypeError: ``prior`` without ``fn`` and ``grad`` methods; ``prox_config`` neither ``None`` nor a
        :class:`~deepinv_ext.priors.ProxConfig`.
    :raises ValueError: ``lam`` not finite and > 0.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import NETT
    >>> from deepinv_ext.priors.scaled import ScaledPrior
    >>> prior = NETT(width=4, depth=1)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> energy, grad = ScaledPrior(prior, 0.5).energy_and_grad(x)
    >>> torch.allclose(energy, 0.5 * prior.fn(x)), torch.allclose(grad, 0.5 * prior.grad(x))
    (True, True)
    >>> learned = ScaledPrior(prior, 0.5, learn_lam=True)
    >>> round(learned.lam.item(), 6), [name for name, _ in learned.named_parameters()][0]
    (0.5, 'log_lam')
    """

    def __init__(self, prior: nn.Module, lam: float, prox_config: ProxConfig | None = None,
                 learn_lam: bool = False) -> None:
        check_fn_and_grad(prior)
        if prox_config is None:
            prox_config = getattr(prior, "prox_config", None)
        super().__init__(prox_config)
        self.prior = prior
        lam = finite_number(lam, "lam", strict=True)
        self.learn_lam = boolean(learn_lam, "learn_lam")
        if self.learn_lam:
            dtype = next((p.dtype for p in prior.parameters()), torch.get_default_dtype())
            self.log_lam = nn.Parameter(torch.tensor(math.log(lam), dtype=dtype))
        else:
            self._lam = lam

    @property
    def lam(self) -> float | Tensor:
        r""":math:`\lambda`: the number given, or :math:`e^{\rho}` (a tensor with a gradient) if learned."""
        return self.log_lam.exp() if self.learn_lam else self._lam

    def check_input(self, x: Tensor, name: str = "x") -> None:
        r"""The input check of ``prior`` (:meth:`SmoothLearnedPrior.check_input` or its override; that of
        :class:`~deepinv_ext.priors.SmoothLearnedPrior` for another prior).

        :param torch.Tensor x: the input to check.
        :param str name: its name in the error messages.
        """
        if isinstance(self.prior, SmoothLearnedPrior):
            self.prior.check_input(x, name)
        else:
            super().check_input(x, name)

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\lambda R(x)` of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images as ``prior`` takes them.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        return self.lam * self.prior.fn(x)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\lambda R(x), \lambda \nabla R(x))` from one call of ``prior.energy_and_grad`` (of ``fn`` and
        ``grad`` for a prior that is not a :class:`~deepinv_ext.priors.SmoothLearnedPrior`).

        :param torch.Tensor x: images as ``prior`` takes them.
        """
        energy, grad = energy_and_grad_of(self.prior, x)
        return self.lam * energy, self.lam * grad

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\lambda \nabla R(x)` from ``prior.grad`` (which may skip the energy, as TDV's does).

        :param torch.Tensor x: images as ``prior`` takes them.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        return self.lam * self.prior.grad(x)
