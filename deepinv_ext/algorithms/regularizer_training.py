r"""A thin :class:`deepinv.models.Reconstructor` that lets :class:`deepinv.Trainer` train a regulariser
(:class:`RegularizerTrainingModel`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from deepinv.models import Reconstructor
from deepinv.optim import Prior
from deepinv.physics import Physics
from torch import Tensor

__all__ = ["RegularizerTrainingModel"]


class RegularizerTrainingModel(Reconstructor):
    r"""Wraps a regulariser for :class:`deepinv.Trainer`; ``forward(y, physics)`` is the pseudo-inverse.

    :class:`deepinv.Trainer` calls ``x_net = model(y, physics)`` and then
    ``loss(x=x, x_net=x_net, y=y, physics=physics, model=model)``, and its optimiser steps ``model.parameters()``.
    A learned regulariser (critic, NETT encoder) is not a reconstructor, so it is trained inside this wrapper:

    - ``model(y, physics)`` returns the **pseudo-inverse reconstruction** (FBP for CT), computed without gradient:
      these are the artefact-laden images the regulariser learns to recognise;
    - the regulariser is the submodule ``model.regularizer``: its parameters are the model's, so the Trainer's
      optimiser trains them, its checkpoints save them, and the losses
      (:class:`deepinv_ext.losses.WassersteinCriticLoss`, :class:`deepinv_ext.losses.NETTLoss`) read it from the
      ``model`` argument (:func:`deepinv_ext.losses.pseudo_inverse.regularizer_of`).

    Training then needs only clean images: the Trainer simulates the measurements (``online_measurements=True``)
    and the wrapper makes the artefact images. The metrics the Trainer logs (PSNR of ``x_net``) are those of the
    pseudo-inverse, constant during training.

    :param deepinv.optim.Prior regularizer: the regulariser to train (a ``torch.nn.Module``).
    :param Callable pseudo_inverse: ``pseudo_inverse(y, physics) -> x``; default ``physics.A_dagger(y)``
        (for :class:`deepinv_ext.physics.AstraCT` pass ``lambda y, physics: physics.A_dagger(y, fbp=True)``).

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.priors import AdversarialRegularizer
    >>> from deepinv_ext.algorithms import RegularizerTrainingModel
    >>> model = RegularizerTrainingModel(AdversarialRegularizer())
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> model(torch.zeros(1, 1, 8, 8), physics).shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, regularizer: Prior,
                 pseudo_inverse: Callable[[Tensor, Physics], Tensor] | None = None) -> None:
        super().__init__()
        if not isinstance(regularizer, torch.nn.Module):
            raise TypeError(f"regularizer must be a torch.nn.Module, got {type(regularizer).__name__}")
        if pseudo_inverse is not None and not callable(pseudo_inverse):
            raise TypeError(f"pseudo_inverse must be callable or None, got {type(pseudo_inverse).__name__}")
        self.regularizer = regularizer
        self.pseudo_inverse = pseudo_inverse

    def forward(self, y: Tensor, physics: Physics, **kwargs: Any) -> Tensor:
        r"""The pseudo-inverse reconstruction, without gradient.

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: ``pseudo_inverse(y, physics)``, or :math:`A^\dagger y`.
        """
        with torch.no_grad():
            if self.pseudo_inverse is None:
                return physics.A_dagger(y)
            return self.pseudo_inverse(y, physics)
