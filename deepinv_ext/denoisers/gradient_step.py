r"""Gradient-step denoisers :math:`D_\sigma = \operatorname{Id} - \nabla g_\sigma` :footcite:p:`hurault2022gradient`.

A gradient-step (GS) denoiser is the explicit gradient step on a learned potential

.. math::

    g_\sigma(x) = \frac{\alpha}{2} \|x - N_\sigma(x)\|_2^2, \qquad
    D_\sigma(x) = x - \nabla g_\sigma(x) = x - \alpha\,(\operatorname{Id} - J_{N_\sigma}(x))^\top (x - N_\sigma(x)),

for any differentiable network :math:`N_\sigma`. Because :math:`D_\sigma` is a gradient field, plug-and-play
proximal gradient descent with it is exactly proximal gradient descent on :math:`f + \lambda g_\sigma`
(:class:`deepinv_ext.algorithms.GradientStepPnP`; Theorem 3 of :footcite:t:`hauptmann2024convergent`).

deepinv already ships this construction as :class:`deepinv.models.GSPnP.GSPnP` (what
:func:`deepinv.models.GSDRUNet` returns). :class:`GradientStepDenoiser` subclasses it, keeps its state-dict layout
(so GS-DRUNet checkpoints load unchanged) and changes three things:

- ``GSPnP.potential_grad`` casts the input to ``float32``: a float64 input silently loses precision and the
  output dtype changes. Here the input dtype is kept (float64 gradient checks work);
- ``GSPnP`` defaults to ``detach=True``: the output still depends on :math:`N_\sigma(x)` through a graph that
  ``autograd.grad`` has already freed, so a loss on :math:`D_\sigma(x)` fails in ``backward()`` and the
  denoiser cannot be trained as it is (it also sets ``requires_grad`` on the caller's input in place). Here the graph of :math:`\nabla g_\sigma` is kept exactly when autograd
  is recording and something requires a gradient (training), and dropped otherwise (inference under
  ``torch.no_grad()``, e.g. in :func:`deepinv.test`); it can also be forced with ``create_graph``;
- ``GSPnP.potential`` uses :func:`torch.linalg.vector_norm` squared, whose gradient is NaN where
  :math:`x = N_\sigma(x)`; here it is a sum of squares.

It also exposes :meth:`GradientStepDenoiser.grad` and :meth:`GradientStepDenoiser.potential_and_grad` (one forward
and one backward pass for both) for the algorithms.

:class:`SmallPotentialNet` is a small convolutional :math:`N_\sigma` that trains on a CPU in minutes, for recipes
and tests; :meth:`GradientStepDenoiser.from_gsdrunet` builds GS-DRUNet from a local weights file (never a download).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from deepinv.models.GSPnP import GSPnP
from torch import Tensor, nn

from deepinv_ext._validation import (
    boolean,
    check_dtype,
    check_image,
    check_tensor,
    checked_device,
    finite_number,
    finite_values,
    load_checkpoint,
    positive_int,
)
from deepinv_ext.priors.smooth import autograd_energy_and_grad

__all__ = ["GradientStepDenoiser", "SmallPotentialNet"]


def _check_sigma(sigma: float | Tensor | None) -> None:
    """Raise unless ``sigma`` is a noise level: a finite number >= 0, or a real tensor of them (one per sample)."""
    if sigma is None:
        raise ValueError("sigma: the potential network needs a noise level, got None")
    finite_values(sigma, "sigma")


def _sigma_map(sigma: float | Tensor | None, x: Tensor) -> Tensor:
    """Broadcast a noise level (float, 0-d tensor or one per batch element) to a ``(B, 1, H, W)`` map."""
    _check_sigma(sigma)
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).flatten()
    if s.numel() not in (1, x.shape[0]):
        raise ValueError(f"sigma must be a float or hold one value per batch element ({x.shape[0]}), "
                         f"got {s.numel()} values")
    return s.expand(x.shape[0]).reshape(-1, 1, *([1] * (x.dim() - 2))).expand(x.shape[0], 1, *x.shape[2:])


class SmallPotentialNet(nn.Module):
    r"""A small convolutional network :math:`N_\sigma(x) = x - r_\theta([x, \sigma])` for gradient-step denoisers.

    :math:`r_\theta` is a plain stack of ``depth`` 3x3 convolutions with ELU activations (smooth enough for
    :math:`\nabla g_\sigma` to be Lipschitz, as for GS-DRUNet) taking the image and a constant noise-level map; the
    potential :math:`g_\sigma = \frac12\|x - N_\sigma(x)\|^2 = \frac12\|r_\theta\|^2` is then small on clean images
    after training. Meant for recipes and tests on a CPU (a few thousand parameters), not for quality.

    :param int in_channels: image channels.
    :param int channels: feature channels.
    :param int depth: number of convolutions (at least 2).
    :raises ValueError: a count that is not an integer >= 1 (``depth`` >= 2).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.denoisers import SmallPotentialNet
    >>> net = SmallPotentialNet(in_channels=1, channels=8, depth=3)
    >>> x = torch.rand(2, 1, 16, 16)
    >>> net(x, 0.1).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 1, 16, 16]), 809)
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, depth: int = 5):
        super().__init__()
        positive_int(in_channels, "in_channels")
        positive_int(channels, "channels")
        positive_int(depth, "depth", minimum=2)
        layers: list[nn.Module] = [nn.Conv2d(in_channels + 1, channels, 3, padding=1), nn.ELU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ELU()]
        layers.append(nn.Conv2d(channels, in_channels, 3, padding=1))
        self.in_channels = in_channels
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        r""":math:`N_\sigma(x) = x - r_\theta([x, \sigma])`.

        :param torch.Tensor x: images ``(B, C, H, W)`` in the precision of the parameters.
        :param float, torch.Tensor sigma: the noise level :math:`\sigma \ge 0`, a number or one per image.
        """
        check_image(x, self.in_channels)
        check_dtype(x, self)
        return x - self.body(torch.cat([x, _sigma_map(sigma, x)], dim=1))


class GradientStepDenoiser(GSPnP):
    r"""Gradient-step denoiser :math:`D_\sigma(x) = x - \nabla g_\sigma(x)`, :math:`g_\sigma(x) = \frac{\alpha}{2}\|x - N_\sigma(x)\|^2`.

    The gradient-step denoiser of :footcite:t:`hurault2022gradient` is the explicit gradient step on a learned
    potential,

    .. math::

        D_\sigma(x) = x - \nabla g_\sigma(x) = x - \alpha\,(\operatorname{Id} - J_{N_\sigma}(x))^\top (x - N_\sigma(x)),

    for any differentiable network :math:`N_\sigma`.

    A :class:`deepinv.models.Denoiser` built on deepinv's :class:`deepinv.models.GSPnP.GSPnP` (same parameters, same
    state-dict keys ``student_grad.model.*``), for any network ``potential_net`` called as
    ``potential_net(x, sigma)``. Differences to ``GSPnP`` (see the module docstring): the dtype is kept, the graph
    of :math:`\nabla g_\sigma` is kept when training so that :class:`deepinv.Trainer` trains it, and
    :math:`g_\sigma` has a gradient everywhere.

    :math:`\nabla g_\sigma` is computed by autograd: one forward pass of :math:`N_\sigma` and one backward pass.
    The denoiser is a gradient field by construction, which is what makes PnP with it a descent method
    (:class:`deepinv_ext.algorithms.GradientStepPnP`).

    :param torch.nn.Module potential_net: the network :math:`N_\sigma`, ``potential_net(x, sigma) -> x``-shaped.
    :param float alpha: scale :math:`\alpha > 0` of the potential (deepinv's relaxation parameter).
    :param bool create_graph: keep the graph of :math:`\nabla g_\sigma` (``True``), never (``False``), or, by default
        (``None``), exactly when autograd is enabled and ``x`` or a parameter requires a gradient.
    :raises TypeError: ``potential_net`` not a module, ``create_graph`` not ``None`` or a bool.
    :raises ValueError: ``alpha`` not finite and > 0.

    Every method takes images ``x`` ``(B, C, ...)`` (a real floating tensor in the precision of the parameters)
    and a noise level ``sigma``: a finite number >= 0, or a real tensor of one per image; anything else raises a
    ``TypeError`` or ``ValueError`` naming ``x`` or ``sigma``.

    |sep|

    :Examples:

    The denoiser is a gradient step:


    >>> import torch
    >>> from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
    >>> denoiser = GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=8, depth=3))
    >>> x = torch.rand(2, 1, 16, 16)
    >>> with torch.no_grad():
    ...     out = denoiser(x, 0.05)
    >>> torch.allclose(out, x - denoiser.grad(x, 0.05))
    True
    """

    def __init__(self, potential_net: nn.Module, alpha: float = 1.0, create_graph: bool | None = None):
        if not isinstance(potential_net, nn.Module):
            raise TypeError(f"potential_net must be a torch.nn.Module, got {type(potential_net).__name__}")
        alpha = finite_number(alpha, "alpha", strict=True)
        if create_graph is not None and not isinstance(create_graph, bool):
            raise TypeError(f"create_graph must be None or a bool, got {create_graph!r}")
        super().__init__(potential_net, alpha=alpha, detach=False)
        self.create_graph = create_graph

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A tiny instance for :func:`deepinv_ext.testing.check_denoiser`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            denoiser = cls(SmallPotentialNet(in_channels=1, channels=8, depth=3))
        return {"denoiser": denoiser, "dataset": example_images(2, 16, generator=g)}

    @classmethod
    def from_gsdrunet(cls, weights: str | Path | None = None, in_channels: int = 3, nb: int = 2,
                      nc: Sequence[int] = (64, 128, 256, 512), act_mode: str = "E", alpha: float = 1.0,
                      device: str | torch.device = "cpu", trainable: bool | None = None) -> GradientStepDenoiser:
        r"""GS-DRUNet (deepinv's :class:`deepinv.models.DRUNet` as :math:`N_\sigma`) from a local weights file.

        Nothing is downloaded: ``weights`` is ``None`` (random initialisation) or the path of a state dict of
        deepinv's :func:`deepinv.models.GSDRUNet` (keys ``student_grad.model.*``, optionally under
        ``"state_dict"``), loaded with ``torch.load(..., weights_only=True)``. Images must have sides divisible by 8.

        :param str, pathlib.Path weights: path of the weights, or ``None``.
        :param int in_channels: image channels (1 or 3 for the published weights).
        :param int nb: residual blocks per scale.
        :param tuple[int, ...] nc: channels per scale (four scales).
        :param str act_mode: activation of DRUNet (``"E"``: ELU, as in the paper).
        :param float alpha: scale of the potential.
        :param str, torch.device device: device of the model.
        :param bool trainable: whether the parameters require grad; ``None`` (default): loaded weights are frozen
            (``requires_grad=False``, for inference: no call keeps a graph of them; pass ``True`` to fine-tune), a
            random initialisation (``weights=None``) is trainable.
        :raises FileNotFoundError: ``weights`` names no file.
        :raises ValueError: naming the file: it is empty, corrupt, or not a GS-DRUNet state dict of this
            architecture; a count that is not an integer >= 1; ``nc`` not four of them; a device that is not there.
        """
        from deepinv.models.drunet import DRUNet

        if isinstance(weights, str) and weights == "download":
            raise ValueError("weights: deepinv-ext never downloads weights; pass the path of a local file or None")
        if trainable is not None:
            boolean(trainable, "trainable")
        positive_int(in_channels, "in_channels")
        positive_int(nb, "nb")
        if not isinstance(nc, (tuple, list)) or len(nc) != 4:
            raise ValueError(f"nc must be four integers >= 1 (channels per scale), got {nc!r}")
        nc = [positive_int(c, "nc") for c in nc]
        device = checked_device(device)
        net = DRUNet(in_channels=in_channels, out_channels=in_channels, nb=nb, nc=nc, act_mode=act_mode,
                     pretrained=None, device="cpu")
        model = cls(net, alpha=alpha)
        if weights is not None:
            state = load_checkpoint(weights, what="GS-DRUNet weights")
            state = state.get("state_dict", state)
            try:
                model.load_state_dict(state, strict=True)
            except (RuntimeError, TypeError, AttributeError) as err:
                raise ValueError(f"GS-DRUNet weights {str(weights)!r} do not fit GS-DRUNet(in_channels={in_channels}, "
                                 f"nb={nb}, nc={tuple(nc)}): {str(err)[:300]}") from err
            model.eval()
        return model.requires_grad_(weights is None if trainable is None else trainable).to(device)

    @property
    def potential_net(self) -> nn.Module:
        r"""The network :math:`N_\sigma`."""
        return self.student_grad.model

    def _check_input(self, x: Tensor, sigma: float | Tensor) -> None:
        check_tensor(x, "x")
        if x.dim() < 2:
            raise ValueError(f"x must be batched, (B, C, ...), got shape {tuple(x.shape)}")
        check_dtype(x, self)
        _check_sigma(sigma)

    def potential(self, x: Tensor, sigma: float | Tensor, *args, **kwargs) -> Tensor:
        r"""The potential :math:`g_\sigma(x) = \frac{\alpha}{2}\|x - N_\sigma(x)\|^2`, one value per batch element.

        :param torch.Tensor x: images ``(B, C, ...)``.
        :param float, torch.Tensor sigma: noise level of :math:`N_\sigma` (float or one per batch element).
        :param args: ignored.
        :param kwargs: ignored.
        :return: (:class:`torch.Tensor`) of shape ``(B,)``.
        """
        self._check_input(x, sigma)
        residual = x - self.student_grad(x, sigma)
        return 0.5 * self.alpha * residual.pow(2).flatten(1).sum(dim=1)

    def potential_and_grad(self, x: Tensor, sigma: float | Tensor,
                           create_graph: bool | None = None) -> tuple[Tensor, Tensor]:
        r""":math:`g_\sigma(x)` (shape ``(B,)``) and :math:`\nabla g_\sigma(x)` with one forward and one backward pass.

        :param torch.Tensor x: images ``(B, C, ...)``.
        :param float, torch.Tensor sigma: noise level.
        :param bool create_graph: keep the graph (differentiable outputs); ``None``: the ``create_graph`` of the
            constructor.
        """
        self._check_input(x, sigma)
        return autograd_energy_and_grad(lambda z: self.potential(z, sigma), x, self.parameters(),
                                        create_graph=self.create_graph if create_graph is None else create_graph)

    def grad(self, x: Tensor, sigma: float | Tensor, create_graph: bool | None = None) -> Tensor:
        r""":math:`\nabla g_\sigma(x) = \alpha\,(\operatorname{Id} - J_{N_\sigma}(x))^\top (x - N_\sigma(x))`.

        :param torch.Tensor x: images ``(B, C, ...)``.
        :param float, torch.Tensor sigma: noise level.
        :param bool create_graph: keep the graph, as in :meth:`potential_and_grad`.
        """
        return self.potential_and_grad(x, sigma, create_graph=create_graph)[1]

    def potential_grad(self, x: Tensor, sigma: float | Tensor, *args, **kwargs) -> Tensor:
        r"""Alias of :meth:`grad`, the name deepinv's ``GSPnP`` uses (without its float32 cast and detach).

        :param torch.Tensor x: images ``(B, C, ...)``.
        :param float, torch.Tensor sigma: noise level.
        :param args: ignored.
        :param kwargs: ignored.
        """
        return self.grad(x, sigma)

    def forward(self, x: Tensor, sigma: float | Tensor, **kwargs) -> Tensor:
        r"""Denoise: :math:`D_\sigma(x) = x - \nabla g_\sigma(x)`.

        :param torch.Tensor x: noisy images ``(B, C, ...)``.
        :param float, torch.Tensor sigma: noise level (float or one per batch element).
        :param kwargs: ignored (the signature of :class:`deepinv.models.Denoiser`).
        """
        return x - self.grad(x, sigma)
