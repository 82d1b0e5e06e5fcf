r"""Adversarial regularisers: a learned critic as the energy of a variational prior.

A critic :math:`g_\theta` is trained (:class:`deepinv_ext.losses.WassersteinCriticLoss`) to tell clean images
(small :math:`g`) from reconstructions with artefacts (large :math:`g`), and then used as the regulariser of

.. math::

    \hat x = \arg\min_x \frac{1}{2}\|Ax - y\|_2^2 + \lambda\, g_\theta(x).

- :class:`AdversarialRegularizer` (AR, :footcite:t:`lunz2018adversarial`): a plain convolutional critic, non-convex.
- :class:`ConvexAdversarialRegularizer` (ACR, :footcite:t:`mukherjee2020learned`): an input-convex network (ICNN)
  plus :math:`\varepsilon\|x\|_2^2`, so the energy is strongly convex and the variational problem has a unique,
  stable solution.

Both return **one energy per batch element** (``fn(x)`` of shape ``(B,)``): unlike :class:`deepinv.models.ICNN`,
whose output broadcasts to ``(B, B)`` for a batch, no batch element sees another. Both are surveyed by
:footcite:t:`hauptmann2024convergent`, Sect. 2.2.3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinv_ext._validation import boolean, finite_number, positive_int
from deepinv_ext.priors.filter_bank import SparsifyingFilterBank
from deepinv_ext.priors.smooth import ProxConfig, SmoothLeakyReLU, SmoothLearnedPrior, smooth_leaky_relu

__all__ = ["AdversarialRegularizer", "ConvexAdversarialRegularizer"]


class AdversarialRegularizer(SmoothLearnedPrior):
    r"""Adversarial regulariser (AR): a convolutional critic (non-convex) as the energy.

    .. math::

        R(x) = g_\theta(x) + \varepsilon\,\|x - \Pi_{[a, b]}(x)\|_2^2 \quad \text{or} \quad
        g_\theta(x) + \varepsilon\,\|x\|_2^2,

    with :math:`\Pi_{[a, b]}` the clamp to the box ``box`` (second form without a box); the solution of
    :math:`\min_x \frac12\|Ax - y\|_2^2 + \lambda R(x)` is the reconstruction. The critic :math:`g_\theta`
    follows :footcite:t:`lunz2018adversarial`: six 5x5 convolutions with leaky ReLU (slope 0.1), widths
    ``widths`` (default 16, 32, 32, 64, 64, 128), the last four with stride 2, then two dense layers (256 units,
    then 1). One deviation, so that any image size works: the features are averaged over space before the
    dense layers (Lunz et al. flatten a fixed-size feature map).

    It is trained by :class:`deepinv_ext.losses.WassersteinCriticLoss` to be small on clean images and large on
    artefact-laden ones, with gradient norm at most about 1 (1-Lipschitz critic, Wasserstein-1 dual)
    :footcite:p:`gulrajani2017improved`.

    :param int in_channels: image channels.
    :param tuple[int, ...] widths: filters of the convolutions.
    :param int kernel_size: convolution size.
    :param int hidden: units of the first dense layer.
    :param float negative_slope: leaky ReLU slope (>= 0).
    :param float eps: weight :math:`\varepsilon \ge 0` of an added :math:`\varepsilon\|x\|_2^2` (default 0, the
        plain AR), or of :math:`\varepsilon\,\operatorname{dist}(x, [a, b]^n)^2` with ``box=(a, b)``. The critic
        alone is not coercive: where :math:`A` has a null space (sparse views) gradient descent on
        :math:`\frac12\|Ax-y\|^2 + \lambda g_\theta` can run off to :math:`g_\theta \to -\infty`. A
        critic with Lipschitz constant :math:`L` has :math:`g_\theta(x) \ge g_\theta(0) - L\|x\|`, so any
        :math:`\varepsilon > 0` makes the energy coercive (minimisers exist, at norm :math:`\lesssim L/\varepsilon`).
        The same holds for the squared distance to a box :math:`[a, b]^n` (``box``), which, unlike
        :math:`\|x\|^2`, leaves images with values in the box (where the critic was trained) unbiased.
        Neither is a trained parameter: both can be set on a trained critic.
    :param tuple[float, float] box: the box :math:`[a, b]` of the ``eps`` term, or ``None`` for
        :math:`\varepsilon\|x\|^2`.
    :param float smoothing: 0 for the leaky ReLU (Lunz et al.), or the softplus width of its smooth version
        (:func:`~deepinv_ext.priors.smooth.smooth_leaky_relu`), which makes :math:`\nabla g_\theta` Lipschitz so that
        :meth:`prox` and gradient solvers reach their tolerances (a piecewise-linear critic has a jumping gradient).
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox` (tolerance,
        iterations, warm start; see :class:`~deepinv_ext.priors.SmoothLearnedPrior`).
    :raises ValueError: a count or width that is not an integer >= 1, ``widths`` empty, a negative or non-finite
        slope, ``eps`` or ``smoothing``, a ``box`` that is not a pair of finite numbers ``a < b``.

    ``grad`` and ``energy_and_grad`` are autograd's, differentiable in the parameters whenever autograd records;
    ``prox`` is the inner solve of :class:`~deepinv_ext.priors.SmoothLearnedPrior`. All take images
    ``(B, in_channels, H, W)`` in the precision of the parameters (:meth:`check_input`).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import AdversarialRegularizer
    >>> prior = AdversarialRegularizer()
    >>> x = torch.rand(3, 1, 32, 32)
    >>> prior.fn(x).shape, prior.grad(x).shape
    (torch.Size([3]), torch.Size([3, 1, 32, 32]))
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 32, 64, 64, 128),
                 kernel_size: int = 5, hidden: int = 256, negative_slope: float = 0.1, eps: float = 0.0,
                 box: tuple[float, float] | None = None, smoothing: float = 0.0,
                 prox_config: ProxConfig | None = None) -> None:
        super().__init__(prox_config)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.eps = finite_number(eps, "eps")
        self.box = None if box is None else _box(box)
        positive_int(kernel_size, "kernel_size")
        positive_int(hidden, "hidden")
        if not isinstance(widths, (tuple, list)) or len(widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of integers >= 1, got {widths!r}")
        widths = [positive_int(width, "widths") for width in widths]
        layers: list[nn.Module] = []
        prev = in_channels
        n = len(widths)
        for i, width in enumerate(widths):
            stride = 2 if i >= n - 4 and n > 2 else 1
            layers += [nn.Conv2d(prev, width, kernel_size, stride=stride, padding=kernel_size // 2),
                       SmoothLeakyReLU(negative_slope, smoothing)]
            prev = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(prev, hidden), SmoothLeakyReLU(negative_slope, smoothing),
                                  nn.Linear(hidden, 1))

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r"""The energy :math:`R(x)`, critic and :math:`\varepsilon` term, of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        self.check_input(x)
        value = self.head(self.features(x).mean(dim=(2, 3))).reshape(x.shape[0])
        if self.eps == 0:
            return value
        outside = x if self.box is None else x - x.clamp(*self.box)
        return value + self.eps * outside.pow(2).sum(dim=(1, 2, 3))

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small smoothed critic in float64 on a batch of two 16x16 images, for
        :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = cls(widths=(4, 4, 8), hidden=8, eps=1e-2, smoothing=0.1).double()
        return {"prior": prior, "x": torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)}


def _box(box: tuple[float, float]) -> tuple[float, float]:
    """``box`` as a pair of finite floats ``(a, b)`` with ``a < b``, or a ValueError naming ``box``."""
    if not isinstance(box, (tuple, list)) or len(box) != 2:
        raise ValueError(f"box must be None or a pair (a, b) of finite numbers with a < b, got {box!r}")
    a, b = (finite_number(v, "box", minimum=None) for v in box)
    if not a < b:
        raise ValueError(f"box must be None or a pair (a, b) of finite numbers with a < b, got {box!r}")
    return a, b


class ConvexAdversarialRegularizer(SmoothLearnedPrior):
    r"""Adversarial convex regulariser (ACR): an input-convex critic, a sparsifying filter bank and an
    :math:`\|x\|_2^2` term.

    .. math::

        z_1 = \sigma(W^x_0 x + b_0), \qquad z_{k+1} = \sigma(W^z_k z_k + W^x_k x + b_k)\ (k = 1, \dots, L-1),

        g_\theta(x) = \operatorname{mean}_{\text{pixels}}\big(W^z_L z_L\big)
        + w \sum_k \|h_k * x\|_1 + (\varepsilon + \beta) \|x\|_2^2,

    with 5x5 convolutions, :math:`\sigma` the leaky ReLU of slope 0.2 (convex and non-decreasing) and the
    hidden-to-hidden weights :math:`W^z_k \ge 0`. Then each :math:`z_k` is convex in :math:`x` (a non-negative
    combination of convex functions composed with a convex non-decreasing :math:`\sigma`), and so is
    :math:`g_\theta`; with :math:`\varepsilon > 0` it is :math:`2\varepsilon`-strongly convex.

    The second and third terms are those of the full model of :footcite:t:`mukherjee2020learned` (their
    public code): a sparsifying filter bank (:class:`~deepinv_ext.priors.filter_bank.SparsifyingFilterBank`,
    learned filters :math:`h_k` and weight :math:`w > 0`; ``sfb_filters=0`` leaves it out) and a learned weight :math:`\beta =
    \operatorname{softplus}(\cdot) > 0` of :math:`\|x\|^2` (``learn_l2``), on top of the fixed floor
    :math:`\varepsilon` that guarantees strong convexity. The filter bank adds what a small ICNN has trouble
    learning, the sparsity of image gradients (it contains anisotropic TV). Both are convex, and both are trained
    with the network by the same critic loss (:class:`deepinv_ext.losses.WassersteinCriticLoss`), whose gradient
    penalty bounds the gradient of the whole energy; the authors' code penalises the network's gradient only and
    keeps the filter bank in check by weight decay.

    **Non-negativity by parametrisation**: :math:`W^z_k = \operatorname{softplus}(V_k)` for free parameters
    :math:`V_k`, so any optimiser (and :class:`deepinv.Trainer`, which has no projection hook) keeps the network
    convex; Mukherjee et al. instead clip negative weights to zero after each step. The :math:`V_k` start so
    that :math:`W^z_k` has mean :math:`1/\text{fan-in}` (activations keep their scale across layers).

    ``smoothing > 0`` replaces the leaky ReLU by its smooth convex version (:func:`smooth_leaky_relu`), which
    makes :math:`\nabla g_\theta` Lipschitz, as gradient descent with a fixed or backtracked step assumes.

    Default size as Mukherjee et al.: 10 layers, 48 filters, 5x5 kernels.

    :param int in_channels: image channels.
    :param int num_filters: hidden channels.
    :param int kernel_size: convolution size.
    :param int num_layers: number of hidden layers :math:`L`.
    :param float eps: weight :math:`\varepsilon \ge 0` of :math:`\|x\|_2^2` (the sum over pixels).
    :param float negative_slope: leaky ReLU slope in :math:`[0, 1]`.
    :param float smoothing: 0 for the leaky ReLU, or the softplus width of its smooth version; also the
        smoothing of the filter bank's absolute value (:func:`~deepinv_ext.priors.filter_bank.smooth_abs`).
    :param int sfb_filters: filters of the sparsifying filter bank (the authors': 10 banks of 32, i.e. 320);
        0 for none.
    :param int sfb_kernel_size: their size (the authors': 7).
    :param bool learn_l2: learn the extra weight :math:`\beta` of :math:`\|x\|^2` (starting at
        :math:`\operatorname{softplus}(-9) \approx 1.2 \cdot 10^{-4}`, as the authors'); ``False``: :math:`\beta = 0`.
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox` (see
        :class:`~deepinv_ext.priors.SmoothLearnedPrior`; with ``smoothing = 0`` the energy is not smooth and the
        solve may stop at ``max_iter`` with a warning).
    :raises ValueError: a count that is not an integer >= 1 (``sfb_filters`` >= 0), a negative or non-finite
        ``eps`` or ``smoothing``, a slope outside :math:`[0, 1]`.
    :raises TypeError: ``learn_l2`` not a bool.

    ``fn``, ``critic``, ``grad``, ``energy_and_grad`` and ``prox`` take images ``(B, in_channels, H, W)`` in the
    precision of the parameters (:meth:`check_input`).

    |sep|

    :Examples:

    Midpoint convexity on random pairs:

    >>> import torch
    >>> from deepinv_ext.priors import ConvexAdversarialRegularizer
    >>> prior = ConvexAdversarialRegularizer(num_filters=8, num_layers=3)
    >>> a, b = torch.rand(2, 4, 1, 16, 16)
    >>> bool((prior.fn((a + b) / 2) <= (prior.fn(a) + prior.fn(b)) / 2 + 1e-5).all())
    True
    """

    def __init__(self, in_channels: int = 1, num_filters: int = 48, kernel_size: int = 5, num_layers: int = 10,
                 eps: float = 1e-3, negative_slope: float = 0.2, smoothing: float = 0.0, sfb_filters: int = 320,
                 sfb_kernel_size: int = 7, learn_l2: bool = True, prox_config: ProxConfig | None = None) -> None:
        super().__init__(prox_config)
        self.in_channels = positive_int(in_channels, "in_channels")
        positive_int(num_filters, "num_filters")
        positive_int(kernel_size, "kernel_size")
        positive_int(num_layers, "num_layers")
        self.eps = finite_number(eps, "eps")
        self.negative_slope = finite_number(negative_slope, "negative_slope", maximum=1)  # convex, non-decreasing
        self.smoothing = finite_number(smoothing, "smoothing")
        boolean(learn_l2, "learn_l2")
        self.padding = kernel_size // 2
        pad = self.padding
        self.wx = nn.ModuleList(nn.Conv2d(in_channels, num_filters, kernel_size, padding=pad)
                                for _ in range(num_layers))
        fan_in = num_filters * kernel_size ** 2
        init = math.log(math.expm1(1.0 / fan_in))  # softplus(init) = 1 / fan_in
        self.wz_raw = nn.ParameterList(
            nn.Parameter(init + 0.5 * torch.randn(num_filters, num_filters, kernel_size, kernel_size))
            for _ in range(num_layers - 1))
        self.out_raw = nn.Parameter(init + 0.5 * torch.randn(1, num_filters, kernel_size, kernel_size))
        positive_int(sfb_filters, "sfb_filters", minimum=0)
        self.filter_bank = (SparsifyingFilterBank(in_channels, sfb_filters, positive_int(sfb_kernel_size,
                                                                                          "sfb_kernel_size"),
                                                  smoothing=self.smoothing) if sfb_filters else None)
        self.l2_raw = nn.Parameter(torch.tensor(-9.0)) if learn_l2 else None

    @property
    def l2_weight(self) -> Tensor:
        r"""The weight :math:`\varepsilon + \beta` of :math:`\|x\|_2^2` (:math:`\ge \varepsilon`)."""
        beta = F.softplus(self.l2_raw) if self.l2_raw is not None else torch.zeros(())
        return self.eps + beta

    def hidden_weights(self) -> list[Tensor]:
        r"""The non-negative weights :math:`W^z_1, \dots, W^z_L` (the last one maps to the output)."""
        return [F.softplus(v) for v in self.wz_raw] + [F.softplus(self.out_raw)]

    def critic(self, x: Tensor) -> Tensor:
        r"""The input-convex network part of the energy (without the filter bank and :math:`\|x\|^2`), shape
        ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        """
        self.check_input(x)
        act = self._act
        weights = self.hidden_weights()
        z = act(self.wx[0](x))
        for wx, wz in zip(self.wx[1:], weights[:-1]):
            z = act(F.conv2d(z, wz.to(x.dtype), padding=self.padding) + wx(x))
        return F.conv2d(z, weights[-1].to(x.dtype), padding=self.padding).mean(dim=(1, 2, 3))

    def _act(self, x: Tensor) -> Tensor:
        return smooth_leaky_relu(x, self.negative_slope, self.smoothing)

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r"""The energy :math:`g_\theta(x)` of each batch element (network, filter bank and :math:`\|x\|^2`
        term), shape ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        energy = self.critic(x) + self.l2_weight.to(x.dtype) * x.pow(2).sum(dim=(1, 2, 3))
        if self.filter_bank is not None:
            energy = energy + self.filter_bank.fn(x)
        return energy

    @torch.no_grad()
    def midpoint_convexity_gap(self, a: Tensor, b: Tensor) -> Tensor:
        r""":math:`g(\tfrac{a+b}{2}) - \tfrac{g(a) + g(b)}{2}` per pair (:math:`\le 0` up to rounding for a
        convex :math:`g`).

        :param torch.Tensor a: images ``(B, in_channels, H, W)``.
        :param torch.Tensor b: images of the same shape.
        """
        return self.fn((a + b) / 2) - (self.fn(a) + self.fn(b)) / 2

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A 3-layer, 4-filter ICNN in float64 on a batch of two 12x12 images, for
        :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = cls(num_filters=4, kernel_size=3, num_layers=3, eps=1e-2, sfb_filters=4, sfb_kernel_size=3,
                        smoothing=0.1).double()
        return {"prior": prior, "x": torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)}
