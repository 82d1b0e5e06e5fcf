r"""A sparsifying filter bank :footcite:p:`mukherjee2020learned`: the learned convex :math:`\ell^1` analysis term of
the adversarial convex regulariser (:class:`SparsifyingFilterBank`), with its smoothed absolute value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.priors.smooth import ProxConfig, SmoothLearnedPrior

__all__ = ["SparsifyingFilterBank", "nan_preserving_sign", "smooth_abs"]


def nan_preserving_sign(x: Tensor) -> Tensor:
    r""":func:`torch.sign`, but NaN where ``x`` is NaN (``torch.sign`` gives 0 there, so that a subgradient built of
    it would turn a NaN input into a finite result)."""
    return torch.where(torch.isnan(x), x, torch.sign(x))


def smooth_abs(x: Tensor, smoothing: float = 0.0) -> Tensor:
    r""":math:`|x|`, or for ``smoothing = s > 0`` the convex, :math:`1/s`-smooth :math:`\sqrt{x^2 + s^2} - s`."""
    if smoothing <= 0:
        return x.abs()
    return torch.sqrt(x * x + smoothing * smoothing) - smoothing


class SparsifyingFilterBank(SmoothLearnedPrior):
    r"""Learned convex sparsity prior: the sparsifying filter bank ("SFB") of the adversarial convex regulariser.

    Introduced by :footcite:t:`mukherjee2020learned`,

    .. math::

        S_\theta(x) = w \sum_{k=1}^{K} \sum_{\text{pixels}} |h_k * x|, \qquad w = \operatorname{softplus}(\rho) > 0,

    with learned filters :math:`h_k` and a learned weight :math:`w`. It is convex (a non-negative sum of absolute
    values of linear maps) and, with finite-difference filters, contains anisotropic total variation; trained
    adversarially, it learns which filter responses are sparse on clean images and not on artefacts.

    The authors' code sums ten banks of 32 filters; that is one bank of 320 filters, computed here by a single
    convolution. The weight starts tiny (:math:`w = \operatorname{softplus}(-12) \approx 6 \cdot 10^{-6}`, as the
    authors'), so that an untrained filter bank leaves the energy it is added to unchanged. Zero padding, as the
    authors' convolutions.

    :param int in_channels: image channels.
    :param int num_filters: number of filters :math:`K`.
    :param int kernel_size: filter size.
    :param float init_weight: the weight :math:`w` at initialisation (> 0).
    :param float smoothing: 0 for :math:`|\cdot|` (the authors' choice), or :math:`s > 0` for
        :math:`\sqrt{t^2 + s^2} - s` (:func:`smooth_abs`), whose gradient is Lipschitz.
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox`
        (:class:`~deepinv_ext.priors.SmoothLearnedPrior`); it needs ``smoothing > 0`` to reach its tolerance (for
        :math:`|\cdot|` it may stop at ``max_iter`` with a warning).
    :raises ValueError: a count that is not an integer >= 1, ``init_weight`` not finite and > 0, ``smoothing``
        negative or not finite.

    ``fn``, ``grad``, ``energy_and_grad`` and ``prox`` take images ``(B, in_channels, H, W)`` in the precision of
    the parameters (:meth:`check_input`).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors.filter_bank import SparsifyingFilterBank
    >>> prior = SparsifyingFilterBank(num_filters=8)
    >>> a, b = torch.rand(2, 4, 1, 16, 16)
    >>> bool((prior.fn((a + b) / 2) <= (prior.fn(a) + prior.fn(b)) / 2 + 1e-9).all())
    True
    """

    def __init__(self, in_channels: int = 1, num_filters: int = 320, kernel_size: int = 7,
                 init_weight: float = math.log1p(math.exp(-12.0)), smoothing: float = 0.0,
                 prox_config: ProxConfig | None = None) -> None:
        super().__init__(prox_config)
        for name, value in (("in_channels", in_channels), ("num_filters", num_filters), ("kernel_size", kernel_size)):
            positive_int(value, name)
        finite_number(init_weight, "init_weight", strict=True)
        finite_number(smoothing, "smoothing")
        self.in_channels, self.smoothing = in_channels, float(smoothing)
        self.filters = nn.Conv2d(in_channels, num_filters, kernel_size, padding=kernel_size // 2, bias=False)
        self.weight_raw = nn.Parameter(torch.tensor(math.log(math.expm1(init_weight))))

    @property
    def weight(self) -> Tensor:
        r"""The weight :math:`w = \operatorname{softplus}(\rho) > 0`."""
        return F.softplus(self.weight_raw)

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`S_\theta(x)` of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        self.check_input(x)
        return self._energy(x, self.filters(x))

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\nabla S_\theta(x) = w \sum_k h_k^\top \operatorname{sign}(h_k * x)` (the smoothed sign for
        ``smoothing > 0``), same shape as ``x``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        self.check_input(x)
        return self._grad(x, self.filters(x))

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""(:meth:`fn`, :meth:`grad`) from one convolution, the gradient by its closed form.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        """
        self.check_input(x)
        responses = self.filters(x)
        return self._energy(x, responses), self._grad(x, responses)

    def _energy(self, x: Tensor, responses: Tensor) -> Tensor:
        return self.weight.to(x.dtype) * smooth_abs(responses, self.smoothing).sum(dim=(1, 2, 3))

    def _grad(self, x: Tensor, responses: Tensor) -> Tensor:
        s = self.smoothing
        slope = nan_preserving_sign(responses) if s <= 0 else responses / torch.sqrt(responses * responses + s * s)
        k = self.filters.weight.to(x.dtype)
        return self.weight.to(x.dtype) * F.conv_transpose2d(slope, k, padding=self.filters.padding[0])

    @classmethod
    def total_variation(cls, in_channels: int = 1, weight: float = 1.0, smoothing: float = 0.01,
                        trainable: bool = False) -> SparsifyingFilterBank:
        r"""Anisotropic total variation :math:`w \sum |x_{i,j+1} - x_{i,j}| + |x_{i+1,j} - x_{i,j}|` as a filter bank
        of the two forward differences :math:`D` (zero padding, :math:`\|D\|^2 \le 8`), smoothed by
        :func:`smooth_abs` for ``smoothing`` :math:`> 0` (a gradient :math:`8w/s`-Lipschitz): the classic lower level
        of bilevel learning :footcite:p:`kunisch2013bilevel` (see :class:`~deepinv_ext.algorithms.HypergradientBound`).

        :param int in_channels: image channels (each differenced on its own).
        :param float weight: :math:`w > 0`.
        :param float smoothing: :math:`s \ge 0`.
        :param bool trainable: leave the filters and the weight trainable (default: frozen, e.g. to learn only the
            regularisation weight of :class:`~deepinv_ext.algorithms.BilevelReconstructor`).
        :return: the prior, in the default dtype.

        |sep|

        :Examples:

        >>> import torch
        >>> from deepinv_ext.priors import SparsifyingFilterBank
        >>> tv = SparsifyingFilterBank.total_variation(smoothing=0.0)
        >>> tv.fn(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])).item()    # two jumps inside, three to the zero padding
        5.0
        """
        prior = cls(in_channels, num_filters=2 * in_channels, kernel_size=3, init_weight=weight, smoothing=smoothing)
        with torch.no_grad():
            d = torch.zeros_like(prior.filters.weight)
            for c in range(in_channels):
                d[2 * c:2 * c + 2, c, 1, 1] = -1.0
                d[2 * c, c, 1, 2] = d[2 * c + 1, c, 2, 1] = 1.0
            prior.filters.weight.copy_(d)
        return prior.requires_grad_(bool(trainable))

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """Six 3x3 smoothed filters with weight 0.5 in float64 on a batch of two 12x12 images, for
        :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = cls(num_filters=6, kernel_size=3, init_weight=0.5, smoothing=0.1).double()
        return {"prior": prior, "x": torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)}
