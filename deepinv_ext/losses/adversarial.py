r"""The Wasserstein critic loss with a one-sided gradient penalty, which trains AR and ACR critics.

:class:`WassersteinCriticLoss` writes out the loss of :footcite:t:`lunz2018adversarial` (after
:footcite:t:`gulrajani2017improved`): :math:`-\mathcal{L}` estimates the Wasserstein-1 distance of the clean and
artefact distributions, and its minimisation makes the critic small on clean images and large on artefacts, while
keeping it (softly) 1-Lipschitz. The data need not be paired. Two options go beyond Lunz et al.'s training.

Optionally (``noise_level`` :math:`= s > 0`), the first half of each artefact batch is replaced by clean images
plus Gaussian noise, :math:`x + \sigma\xi` with :math:`\sigma \sim U[0, s]` per image: the critic then also
learns to rise on perturbations of clean images in every direction, not only along the artefacts of the
pseudo-inverse, such as the noise that gradient descent on the data term brings back. This is an addition to
Lunz et al.'s training (compare :class:`deepinv_ext.losses.NETTLoss` ``noise_level``).

Optionally (``descent_steps`` :math:`= K > 0`), the first half of the artefact batch is then replaced by the end
points of :math:`K` normalised gradient steps on :math:`g` from it
(:func:`deepinv_ext.losses.descent.normalised_descent`): images where the critic is low although they are not
clean, which gradient descent on the variational energy would reach; the critic learns to rise on them. Also an
addition to Lunz et al.'s training.
"""

from __future__ import annotations

from typing import Any

import torch
from deepinv.loss import Loss
from deepinv.optim import Prior
from torch import Tensor

from deepinv_ext._validation import boolean, check_batch, finite_number, positive_int
from deepinv_ext.losses.descent import normalised_descent
from deepinv_ext.losses.pseudo_inverse import check_pair, check_regularizer, regularizer_of

__all__ = ["WassersteinCriticLoss"]


class WassersteinCriticLoss(Loss):
    r"""Wasserstein critic loss with a one-sided gradient penalty, for training AR/ACR in :class:`deepinv.Trainer`.

    .. math::

        \mathcal{L}(\theta) = \mathbb{E}_{x \sim \mathbb{P}_r}\big[g_\theta(x)\big]
        - \mathbb{E}_{z \sim \mathbb{P}_n}\big[g_\theta(z)\big]
        + \mu\, \mathbb{E}_{\hat x}\Big[\big(\|\nabla g_\theta(\hat x)\|_2 - 1\big)_+^2\Big],
        \qquad \hat x = t x + (1 - t) z,\ t \sim U[0, 1],

    with :math:`\mathbb{P}_r` the clean images, :math:`\mathbb{P}_n` the pseudo-inverse reconstructions (artefacts)
    and :math:`\hat x` random points between a clean and an artefact image :footcite:p:`lunz2018adversarial`, with
    the gradient penalty of :footcite:t:`gulrajani2017improved`. It makes :math:`g_\theta` small on clean images,
    large on artefacts and (softly) 1-Lipschitz. The data need not be paired: the clean images of the interpolates
    are a random permutation of the batch. ``noise_level`` and ``descent_steps`` add harder artefacts (noisy clean
    images, and the end points of gradient descent on :math:`g_\theta`) to the first half of the artefact batch.

    In the Trainer, ``x`` is the clean batch and ``x_net`` the artefact batch: train a
    :class:`deepinv_ext.algorithms.RegularizerTrainingModel` (whose output is the pseudo-inverse) and the loss reads
    the critic from ``model.regularizer`` (or give ``regularizer`` here).

    :param float mu: weight :math:`\mu \ge 0` of the gradient penalty (10 as in Gulrajani et al.; ``mu=0``
        drops it).
    :param bool one_sided: penalise only gradient norms above 1 (:math:`(\cdot)_+^2`, the issue's form); ``False``
        gives the two-sided penalty :math:`(\|\nabla g\| - 1)^2` of Gulrajani et al.
    :param deepinv.optim.Prior regularizer: the critic; default: ``model.regularizer`` at each call.
    :param float noise_level: largest noise standard deviation :math:`s \ge 0` of the noisy clean images that
        replace half of the artefact batch (0: none, Lunz et al.'s loss).
    :param int descent_steps: normalised gradient steps :math:`K \ge 0` on the critic from the first half of the
        artefact batch, whose end points replace it (0: none, Lunz et al.'s loss).
    :param torch.Generator generator: random source of the interpolation weights, the permutation, the noise and
        the step lengths.
    :raises ValueError: ``mu`` or ``noise_level`` negative or not finite, ``descent_steps`` not an integer >= 0.
    :raises TypeError: ``one_sided`` not a bool; ``regularizer`` not a module with ``fn`` (and ``grad`` for
        ``descent_steps``); ``generator`` not a :class:`torch.Generator`.

    ``x`` and ``x_net`` are batches of one shape, at least one sample (the penalty pairs samples), in the
    precision of the critic.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import AdversarialRegularizer
    >>> from deepinv_ext.losses import WassersteinCriticLoss
    >>> loss = WassersteinCriticLoss(mu=10.0, regularizer=AdversarialRegularizer())
    >>> clean, artefact = torch.rand(2, 4, 1, 16, 16)
    >>> loss(x=clean, x_net=artefact).shape
    torch.Size([4])
    """

    def __init__(self, mu: float = 10.0, one_sided: bool = True, regularizer: Prior | None = None,
                 generator: torch.Generator | None = None, noise_level: float = 0.0,
                 descent_steps: int = 0) -> None:
        super().__init__()
        self.mu, self.noise_level = finite_number(mu, "mu"), finite_number(noise_level, "noise_level")
        self.one_sided = boolean(one_sided, "one_sided")
        self.descent_steps = positive_int(descent_steps, "descent_steps", minimum=0)
        if regularizer is not None:
            check_regularizer(regularizer, self._methods())
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be None or a torch.Generator, got {type(generator).__name__}")
        self.regularizer = regularizer
        self.generator = generator

    def _methods(self) -> tuple[str, ...]:
        return ("fn", "grad") if self.descent_steps > 0 else ("fn",)

    def gradient_penalty(self, critic: Prior, clean: Tensor, artefact: Tensor) -> tuple[Tensor, Tensor]:
        r"""Per-sample penalty :math:`(\|\nabla g(\hat x)\| - 1)_+^2` (or two-sided) and the gradient norms.

        :param deepinv.optim.Prior critic: the critic :math:`g`.
        :param torch.Tensor clean: clean images.
        :param torch.Tensor artefact: artefact images, same shape.
        """
        b = clean.shape[0]
        gen = self.generator
        perm = torch.randperm(b, generator=gen).to(clean.device) if b > 1 else torch.zeros(1, dtype=torch.long,
                                                                                            device=clean.device)
        t = torch.rand(b, 1, 1, 1, generator=gen, dtype=clean.dtype).to(clean.device)
        interp = (t * clean[perm] + (1 - t) * artefact).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic.fn(interp).sum(), interp, create_graph=True)
        norms = grad.flatten(1).norm(dim=1)
        excess = norms - 1
        if self.one_sided:
            excess = excess.clamp(min=0)
        return excess.pow(2), norms

    def artefacts(self, x: Tensor, x_net: Tensor, critic: Prior | None = None) -> Tensor:
        r"""The artefact batch: ``x_net``, its first half replaced by noisy clean images when ``noise_level > 0``,
        then by the end points of the descent on ``critic`` from it when ``descent_steps > 0``.

        :param torch.Tensor x: clean images.
        :param torch.Tensor x_net: artefact images, same shape.
        :param deepinv.optim.Prior critic: the critic (needed when ``descent_steps > 0``).
        """
        artefact = x_net.detach()
        half = x.shape[0] // 2
        if half == 0:
            return artefact
        gen = self.generator
        if self.noise_level > 0:
            sigma = self.noise_level * torch.rand(half, 1, 1, 1, generator=gen, dtype=x.dtype).to(x.device)
            noise = torch.randn(x[:half].shape, generator=gen, dtype=x.dtype).to(x.device)
            artefact = torch.cat([x[:half].detach() + sigma * noise, artefact[half:]])
        if self.descent_steps > 0:
            if critic is None:
                raise ValueError("WassersteinCriticLoss.artefacts: descent_steps > 0 needs the critic")
            found = normalised_descent(critic, artefact[:half], x[:half].detach(), self.descent_steps, gen)
            artefact = torch.cat([found, artefact[half:]])
        return artefact

    def components(self, x: Tensor, x_net: Tensor, model: torch.nn.Module | None = None) -> dict[str, Tensor]:
        r"""The loss's parts per sample: ``"clean"`` :math:`g(x)`, ``"artefact"`` :math:`g(z)`, ``"penalty"``,
        ``"grad_norm"`` at the interpolates.

        :param torch.Tensor x: clean images.
        :param torch.Tensor x_net: artefact images, same shape.
        :param torch.nn.Module model: the trained model, holding the critic as ``model.regularizer``.
        """
        critic = regularizer_of(model, self.regularizer, type(self).__name__, self._methods())
        check_pair(x, x_net, critic)
        check_batch(x, "x")
        clean, artefact = x.detach(), self.artefacts(x, x_net, critic)
        with torch.enable_grad():
            penalty, norms = self.gradient_penalty(critic, clean, artefact) if self.mu > 0 else (
                torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), None)
            return {"clean": critic.fn(clean), "artefact": critic.fn(artefact), "penalty": penalty,
                    "grad_norm": norms}

    def forward(self, x: Tensor, x_net: Tensor, y: Tensor | None = None, physics: Any = None,
                model: torch.nn.Module | None = None, **kwargs: Any) -> Tensor:
        r"""The loss per sample, shape ``(B,)`` (its mean is the loss above).

        :param torch.Tensor x: clean images.
        :param torch.Tensor x_net: artefact images (the pseudo-inverse reconstructions).
        :param torch.Tensor y: measurements (unused).
        :param deepinv.physics.Physics physics: the physics (unused).
        :param torch.nn.Module model: the trained model, holding the critic as ``model.regularizer``.
        :param kwargs: ignored (the signature of :class:`deepinv.loss.Loss`).
        """
        parts = self.components(x, x_net, model)
        return parts["clean"] - parts["artefact"] + self.mu * parts["penalty"]

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """One Trainer step of a tiny AR critic on 16x16 test images with noisy copies as the artefacts, for
        :func:`deepinv_ext.testing.check_loss`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        import deepinv as dinv

        from deepinv_ext.algorithms.regularizer_training import RegularizerTrainingModel
        from deepinv_ext.priors.adversarial import AdversarialRegularizer
        from deepinv_ext.testing.examples import example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            model = RegularizerTrainingModel(AdversarialRegularizer(widths=(4, 4, 8), hidden=8))
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
        return {"loss": cls(mu=10.0), "model": model, "physics": physics,
                "dataset": example_images(4, 16, generator=g)}
