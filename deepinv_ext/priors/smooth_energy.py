r"""The energy and gradient of any smooth prior, as the solvers of deepinv-ext take them: a
:class:`~deepinv_ext.priors.SmoothLearnedPrior` in one sweep (``energy_and_grad``), any other prior (deepinv's
included) through its ``fn`` and ``grad``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from deepinv_ext.priors.smooth import SmoothLearnedPrior

__all__ = ["check_fn_and_grad", "energy_and_grad_of"]


def check_fn_and_grad(prior: Any) -> None:
    r"""Raise unless ``prior`` has callable ``fn`` and ``grad`` methods (a smooth prior a solver can minimise).

    :param prior: the prior to check.
    :raises TypeError: ``fn`` or ``grad`` missing.

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.priors.smooth_energy import check_fn_and_grad
    >>> check_fn_and_grad(dinv.optim.prior.Tikhonov())
    >>> check_fn_and_grad(torch.nn.Identity())
    Traceback (most recent call last):
    ...
    TypeError: prior must have fn and grad methods, got Identity
    """
    if not callable(getattr(prior, "fn", None)) or not callable(getattr(prior, "grad", None)):
        raise TypeError(f"prior must have fn and grad methods, got {type(prior).__name__}")


def energy_and_grad_of(prior: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`(R(x), \nabla R(x))`: one forward and one backward sweep of a
    :class:`~deepinv_ext.priors.SmoothLearnedPrior` (its ``energy_and_grad``), ``fn`` and ``grad`` of any other prior.

    :param prior: a prior with ``fn`` and ``grad`` (:func:`check_fn_and_grad`).
    :param torch.Tensor x: the images.
    :return: the energies as ``fn`` gives them and the gradient, shape of ``x``.

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.priors.smooth_energy import energy_and_grad_of
    >>> energy, grad = energy_and_grad_of(dinv.optim.prior.Tikhonov(), torch.ones(2, 1, 2, 2))
    >>> energy.tolist(), bool((grad == 1).all())
    ([2.0, 2.0], True)
    """
    if isinstance(prior, SmoothLearnedPrior):
        return prior.energy_and_grad(x)
    return prior.fn(x), prior.grad(x)
