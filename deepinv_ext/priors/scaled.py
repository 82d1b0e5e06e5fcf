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

from torch import Tensor

from deepinv_ext._validation import finite_number
from deepinv_ext.priors.smooth import ProxConfig, SmoothLearnedPrior

__all__ = ["ScaledPrior"]


class ScaledPrior(SmoothLearnedPrior):
    r"""The prior :math:`\lambda R` for a smooth learned prior :math:`R` and a weight :math:`\lambda > 0`.

    The prior :math:`R` is a submodule (``prior``): its parameters are this prior's, and its input check
    (:meth:`check_input`) is this prior's.

    :param deepinv_ext.priors.SmoothLearnedPrior prior: :math:`R`.
    :param float lam: the weight :math:`\lambda > 0`, finite.
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox` (default: those
        of ``prior``).
    :raises TypeError: ``prior`` not a :class:`~deepinv_ext.priors.SmoothLearnedPrior`; ``prox_config`` neither
        ``None`` nor a :class:`~deepinv_ext.priors.ProxConfig`.
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
    """

    def __init__(self, prior: SmoothLearnedPrior, lam: float, prox_config: ProxConfig | None = None) -> None:
        if not isinstance(prior, SmoothLearnedPrior):
            raise TypeError(f"prior must be a deepinv_ext.priors.SmoothLearnedPrior, got {type(prior).__name__}")
        super().__init__(prior.prox_config if prox_config is None else prox_config)
        self.prior = prior
        self.lam = finite_number(lam, "lam", strict=True)

    def check_input(self, x: Tensor, name: str = "x") -> None:
        r"""The input check of ``prior`` (:meth:`SmoothLearnedPrior.check_input` or its override).

        :param torch.Tensor x: the input to check.
        :param str name: its name in the error messages.
        """
        self.prior.check_input(x, name)

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\lambda R(x)` of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images as ``prior`` takes them.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        return self.lam * self.prior.fn(x)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\lambda R(x), \lambda \nabla R(x))` from one call of ``prior.energy_and_grad``.

        :param torch.Tensor x: images as ``prior`` takes them.
        """
        energy, grad = self.prior.energy_and_grad(x)
        return self.lam * energy, self.lam * grad

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\lambda \nabla R(x)` from ``prior.grad`` (which may skip the energy, as TDV's does).

        :param torch.Tensor x: images as ``prior`` takes them.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        return self.lam * self.prior.grad(x)
