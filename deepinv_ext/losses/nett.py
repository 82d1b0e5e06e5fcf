r"""The NETT training loss: the network :math:`\Phi` returns the artefact of an artefact image, zero on a clean one.

:class:`NETTLoss` writes out the loss of :footcite:t:`li2020nett`, which makes the regulariser
:math:`R(x) = \sum_i v_i|\Phi(x)_i|^p` (:class:`deepinv_ext.priors.NETT`) small on clean images and large on
images that carry the artefacts of the pseudo-inverse; it needs paired data. Two options go beyond Li et al.'s
strategy.

Optionally (``noise_level`` :math:`= s > 0`), a third term teaches :math:`\Phi` to return random perturbations of
clean images as well, :math:`\tfrac1N\|\Phi(x + n) - n\|_2^2` with :math:`n = \sigma \xi`,
:math:`\xi \sim \mathcal N(0, I)`, :math:`\sigma \sim U[0, s]` per sample. The artefacts of the pseudo-inverse
span few directions (streaks); the perturbations make :math:`R(x + n) \approx \|n\|^p` grow in every direction
around the clean images, also where the solver's iterates leave the segment from clean image to artefact image.
This is an addition to Li et al.'s strategy.

Optionally (``descent_steps`` :math:`= K > 0`), a fourth term :math:`\tfrac1N\|\Phi(z') - (z' - x)\|_2^2`
teaches :math:`\Phi` the images :math:`z'` that :math:`K` normalised gradient steps on :math:`R` reach from the
artefact image (:func:`deepinv_ext.losses.descent.normalised_descent`): the blind spots of :math:`\Phi`, images
far from :math:`x` with :math:`\Phi \approx 0`, which the variational solve finds otherwise. An addition to Li et
al.'s strategy as well.
"""

from __future__ import annotations

from typing import Any

import torch
from deepinv.loss import Loss
from torch import Tensor

from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.losses.descent import normalised_descent
from deepinv_ext.losses.pseudo_inverse import check_pair, check_regularizer, regularizer_of

__all__ = ["NETTLoss"]


class NETTLoss(Loss):
    r"""NETT training loss: :math:`\Phi` returns the artefact of an artefact image, zero on a clean one.

    .. math::

        \mathcal{L}(\theta) = \mathbb{E}\Big[\tfrac{1}{N}\big\|\Phi_\theta(z) - (z - x)\big\|_2^2
        + \tfrac{\beta}{N}\big\|\Phi_\theta(x)\big\|_2^2\Big],

    with :math:`x` a clean image, :math:`z` its pseudo-inverse reconstruction (so :math:`z - x` is the artefact) and
    :math:`N` the number of pixels: the training strategy of :footcite:t:`li2020nett`, which needs paired data.
    ``noise_level`` adds :math:`\tfrac1N\|\Phi(x + n) - n\|_2^2` for random perturbations :math:`n` of the clean
    images, ``descent_steps`` the same artefact term at the end points of gradient descent on :math:`R` from
    :math:`z` (additions to Li et al.'s strategy, see :mod:`deepinv_ext.losses.nett`).

    In :class:`deepinv.Trainer`, ``x`` is the clean batch and ``x_net`` the artefact batch :math:`z` (train a
    :class:`deepinv_ext.algorithms.RegularizerTrainingModel` holding a :class:`deepinv_ext.priors.NETT`); the
    regulariser comes from ``model.regularizer`` or the ``regularizer`` argument and must have a method
    ``phi(x)``.

    :param float clean_weight: :math:`\beta \ge 0`.
    :param float noise_level: largest standard deviation :math:`s \ge 0` of the perturbations (0: none, Li et al.'s
        loss).
    :param int descent_steps: normalised gradient steps :math:`K \ge 0` on :math:`R` from the artefact image (0:
        none, Li et al.'s loss).
    :param deepinv_ext.priors.NETT regularizer: default ``model.regularizer`` at each call.
    :raises ValueError: ``clean_weight`` or ``noise_level`` negative or not finite, ``descent_steps`` not an
        integer >= 0.
    :raises TypeError: ``regularizer`` not a module with ``phi`` (and ``grad`` for ``descent_steps``).

    ``x`` and ``x_net`` are batches of one shape in the precision of the regulariser; an empty batch gives an
    empty loss.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import NETT
    >>> from deepinv_ext.losses import NETTLoss
    >>> loss = NETTLoss(regularizer=NETT(width=4))
    >>> clean, artefact = torch.rand(2, 3, 1, 16, 16)
    >>> loss(x=clean, x_net=artefact).shape
    torch.Size([3])
    """

    def __init__(self, clean_weight: float = 1.0, regularizer: torch.nn.Module | None = None,
                 noise_level: float = 0.0, descent_steps: int = 0) -> None:
        super().__init__()
        self.clean_weight = finite_number(clean_weight, "clean_weight")
        self.noise_level = finite_number(noise_level, "noise_level")
        self.descent_steps = positive_int(descent_steps, "descent_steps", minimum=0)
        if regularizer is not None:
            check_regularizer(regularizer, self._methods())
        self.regularizer = regularizer

    def _methods(self) -> tuple[str, ...]:
        return ("phi", "grad") if self.descent_steps > 0 else ("phi",)

    def forward(self, x: Tensor, x_net: Tensor, y: Tensor | None = None, physics: Any = None,
                model: torch.nn.Module | None = None, **kwargs: Any) -> Tensor:
        r"""The loss per sample, shape ``(B,)``.

        :param torch.Tensor x: clean images.
        :param torch.Tensor x_net: their artefact images (pseudo-inverse reconstructions).
        :param torch.Tensor y: measurements (unused).
        :param deepinv.physics.Physics physics: the physics (unused).
        :param torch.nn.Module model: the trained model, holding the NETT as ``model.regularizer``.
        :param kwargs: ignored (the signature of :class:`deepinv.loss.Loss`).
        """
        reg = regularizer_of(model, self.regularizer, type(self).__name__, self._methods())
        check_pair(x, x_net, reg)
        clean, artefact = x.detach(), x_net.detach()
        loss = (reg.phi(artefact) - (artefact - clean)).pow(2).flatten(1).mean(dim=1)
        if self.clean_weight > 0:
            loss = loss + self.clean_weight * reg.phi(clean).pow(2).flatten(1).mean(dim=1)
        if self.noise_level > 0:
            sigma = self.noise_level * torch.rand(clean.shape[0], 1, 1, 1, dtype=clean.dtype, device=clean.device)
            noise = sigma * torch.randn_like(clean)
            loss = loss + (reg.phi(clean + noise) - noise).pow(2).flatten(1).mean(dim=1)
        if self.descent_steps > 0:
            found = normalised_descent(reg, artefact, clean, self.descent_steps)
            loss = loss + (reg.phi(found) - (found - clean)).pow(2).flatten(1).mean(dim=1)
        return loss

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """One Trainer step of a tiny NETT on 16x16 test images with noisy copies as the artefacts, for
        :func:`deepinv_ext.testing.check_loss`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        import deepinv as dinv

        from deepinv_ext.algorithms.regularizer_training import RegularizerTrainingModel
        from deepinv_ext.priors.nett import NETT
        from deepinv_ext.testing.examples import example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            model = RegularizerTrainingModel(NETT(width=4, depth=1))
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
        return {"loss": cls(), "model": model, "physics": physics, "dataset": example_images(4, 16, generator=g)}
