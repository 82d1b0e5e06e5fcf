r"""A prior of real images applied to complex ones, :math:`R(u) + R(v)` for :math:`x = u + iv`, itself a smooth
learned prior: how a denoising prior (TDV trained on gray images) regularises MRI, whose images deepinv stores as
``(B, 2, H, W)`` (real and imaginary parts as two channels)."""

from __future__ import annotations

from torch import Tensor

from deepinv_ext._validation import check_tensor
from deepinv_ext.priors.smooth import ProxConfig, SmoothLearnedPrior

__all__ = ["RealImagPrior"]


class RealImagPrior(SmoothLearnedPrior):
    r"""The prior of complex images :math:`x = u + iv`, stored as ``(B, 2, H, W)`` (deepinv's MRI layout),

    .. math::

        R_{\mathbb{C}}(x) = R(u) + R(v), \qquad \nabla R_{\mathbb{C}}(x) = \big(\nabla R(u), \nabla R(v)\big),

    for a one-channel smooth learned prior :math:`R`. The two parts go through ``prior`` as one batch of ``2B``
    one-channel images (one call of its ``energy_and_grad``, so a hand-derived gradient, TDV's, is kept); the
    proximal operator is the inner solve of :class:`~deepinv_ext.priors.SmoothLearnedPrior` on
    :math:`R_{\mathbb{C}}`.

    :param deepinv_ext.priors.SmoothLearnedPrior prior: :math:`R`, a prior of one-channel images.
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox` (default: those
        of ``prior``).
    :raises TypeError: ``prior`` not a :class:`~deepinv_ext.priors.SmoothLearnedPrior`.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import NETT, RealImagPrior
    >>> prior = NETT(width=4, depth=1)
    >>> x = torch.rand(3, 2, 8, 8)
    >>> energy, grad = RealImagPrior(prior).energy_and_grad(x)
    >>> torch.allclose(energy, prior.fn(x[:, :1]) + prior.fn(x[:, 1:]))
    True
    >>> torch.allclose(grad[:, 1:], prior.grad(x[:, 1:]))
    True
    """

    def __init__(self, prior: SmoothLearnedPrior, prox_config: ProxConfig | None = None) -> None:
        if not isinstance(prior, SmoothLearnedPrior):
            raise TypeError(f"prior must be a deepinv_ext.priors.SmoothLearnedPrior, got {type(prior).__name__}")
        super().__init__(prior.prox_config if prox_config is None else prox_config)
        self.prior = prior

    def check_input(self, x: Tensor, name: str = "x") -> None:
        r"""``x`` of shape ``(B, 2, H, W)``, each part an image that ``prior`` takes.

        :param torch.Tensor x: the input to check.
        :param str name: its name in the error messages.
        :raises TypeError: ``x`` not a real floating tensor.
        :raises ValueError: ``x`` does not hold two channels (real and imaginary parts).
        """
        check_tensor(x, name, ndim=4)
        if x.shape[1] != 2:
            raise ValueError(f"{name} must hold complex images as (B, 2, H, W) (real, imaginary), "
                             f"got shape {tuple(x.shape)}")
        self.prior.check_input(self._parts(x), name)

    @staticmethod
    def _parts(x: Tensor) -> Tensor:
        return x.reshape(x.shape[0] * 2, 1, *x.shape[-2:])

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`R(u) + R(v)` of each batch element, shape ``(B,)``.

        :param torch.Tensor x: complex images ``(B, 2, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        self.check_input(x)
        return self.prior.fn(self._parts(x)).reshape(x.shape[0], 2).sum(dim=1)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`R_{\mathbb{C}}(x)` and :math:`\nabla R_{\mathbb{C}}(x)` from one call of
        ``prior.energy_and_grad``.

        :param torch.Tensor x: complex images ``(B, 2, H, W)``.
        """
        self.check_input(x)
        energy, grad = self.prior.energy_and_grad(self._parts(x))
        return energy.reshape(x.shape[0], 2).sum(dim=1), grad.reshape(x.shape)

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\nabla R_{\mathbb{C}}(x) = (\nabla R(u), \nabla R(v))` from ``prior.grad``.

        :param torch.Tensor x: complex images ``(B, 2, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        self.check_input(x)
        return self.prior.grad(self._parts(x)).reshape(x.shape)
