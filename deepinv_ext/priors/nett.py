r"""NETT :footcite:p:`li2020nett`: a weighted :math:`\ell^p` norm of a learned encoder-decoder as a variational
regulariser (:class:`NETT`), and its default network, a U-Net with a bounded output that keeps the regulariser
coercive (:class:`BoundedUNet`). NETT is surveyed by :footcite:t:`hauptmann2024convergent`, Sect. 2.2.4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinv_ext._validation import finite_number, finite_values, positive_int
from deepinv_ext.priors.smooth import ProxConfig, SmoothLeakyReLU, SmoothLearnedPrior

__all__ = ["NETT", "BoundedUNet"]


def _block(cin: int, cout: int, slope: float, smoothing: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), SmoothLeakyReLU(slope, smoothing),
                         nn.Conv2d(cout, cout, 3, padding=1), SmoothLeakyReLU(slope, smoothing))


class BoundedUNet(nn.Module):
    r"""A small U-Net :math:`D` with leaky ReLU and a bounded output :math:`b\tanh(u/b)`.

    :param int in_channels: image channels.
    :param int width: channels of the first level (doubled at each coarser level).
    :param int depth: number of down-sampling steps. Any image size is taken: the input is padded (replicate, at
        the bottom and right) to sides divisible by :math:`2^{depth}` and the output cropped back, so that
        :math:`D` stays bounded by :math:`b` (and NETT coercive) for every size.
    :param float bound: output bound :math:`b > 0`.
    :param float negative_slope: leaky ReLU slope.
    :param float smoothing: 0 for the leaky ReLU, or the softplus width of its smooth version
        (:func:`~deepinv_ext.priors.smooth.smooth_leaky_relu`): then :math:`D` and :math:`R` have Lipschitz
        gradients, and :meth:`NETT.prox` reaches its tolerance.
    :raises ValueError: ``in_channels`` or ``width`` not an integer >= 1, ``depth`` not an integer >= 0, ``bound``
        not finite and > 0, a negative or non-finite slope or smoothing.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 2, bound: float = 2.0,
                 negative_slope: float = 0.2, smoothing: float = 0.0) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        self.bound = finite_number(bound, "bound", strict=True)
        self.depth = positive_int(depth, "depth", minimum=0)
        widths = [positive_int(width, "width") * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList(_block(c_in, c_out, negative_slope, smoothing)
                                  for c_in, c_out in zip([in_channels] + widths[:-1], widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(depth))
        self.merge = nn.ModuleList(_block(2 * widths[k], widths[k], negative_slope, smoothing)
                                   for k in range(depth))
        self.out = nn.Conv2d(widths[0], in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        side = 2 ** self.depth
        h, w = x.shape[-2:]
        z = F.pad(x, (0, -w % side, 0, -h % side), mode="replicate") if (h % side or w % side) else x
        skips = []
        for k, block in enumerate(self.down):
            z = block(z if k == 0 else F.avg_pool2d(z, 2))
            skips.append(z)
        for k in reversed(range(self.depth)):
            z = self.merge[k](torch.cat([self.up[k](z), skips[k]], dim=1))
        return self.bound * torch.tanh(self.out(z)[..., :h, :w] / self.bound)


class NETT(SmoothLearnedPrior):
    r"""NETT regulariser: a weighted :math:`\ell^p` norm of a learned artefact map.

    .. math::

        R(x) = \sum_i v_i\, |\Phi(x)_i|^p, \qquad \Phi(x) = x - D(x),

    where :math:`D` is a small encoder-decoder trained by :class:`deepinv_ext.losses.NETTLoss` so that :math:`\Phi`
    returns the artefact of an image with artefacts and zero on a clean image: :math:`R` measures how much
    artefact an image carries. With the default :math:`D = b\tanh(u/b)` (:class:`BoundedUNet`),
    :math:`\|D(x)\|_\infty \le b`, so that, :math:`N` the number of pixels,

    .. math::

        R(x) \ge v_{\min} \big(\|x\|_p - b\, N^{1/p}\big)_+^p \to \infty \quad (\|x\| \to \infty):

    :math:`R` is coercive whatever the weights of the network, which the existence and stability of the NETT
    minimisers need (condition (R3) of :footcite:t:`li2020nett`).

    :param int in_channels: image channels.
    :param float p: exponent :math:`p \ge 1` (:math:`p = 2`, the default, makes :math:`R` smooth).
    :param float, torch.Tensor weights: weights :math:`v_i > 0`: a number, or a tensor broadcastable to one image
        ``(C, H, W)``.
    :param torch.nn.Module network: the network :math:`D` (default :class:`BoundedUNet` with ``width`` and
        ``depth``); coercivity needs a bounded :math:`D`.
    :param int width: channels of the default U-Net.
    :param int depth: levels of the default U-Net.
    :param float bound: output bound of the default U-Net.
    :param float smoothing: activation smoothing of the default U-Net (see :class:`BoundedUNet`).
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox`
        (:class:`~deepinv_ext.priors.SmoothLearnedPrior`; :math:`R` is smooth for :math:`p > 1`).
    :raises ValueError: ``p`` < 1 or not finite; ``weights`` not finite and > 0 everywhere, or not broadcastable to
        ``(in_channels, H, W)``; the arguments of the default U-Net as in :class:`BoundedUNet`.
    :raises TypeError: ``weights`` not a real number or tensor; ``network`` neither ``None`` nor a module.

    ``grad`` and ``energy_and_grad`` are autograd's, differentiable in the parameters whenever autograd records.
    ``fn``, ``phi``, ``grad``, ``energy_and_grad`` and ``prox`` take images ``(B, in_channels, H, W)`` in the
    precision of the parameters (:meth:`check_input`).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import NETT
    >>> prior = NETT(width=4)
    >>> x = torch.rand(2, 1, 16, 16)
    >>> prior.fn(x).shape, prior.grad(x).shape
    (torch.Size([2]), torch.Size([2, 1, 16, 16]))
    """

    def __init__(self, in_channels: int = 1, p: float = 2.0, weights: float | Tensor = 1.0,
                 network: nn.Module | None = None, width: int = 16, depth: int = 2, bound: float = 2.0,
                 smoothing: float = 0.0, prox_config: ProxConfig | None = None) -> None:
        super().__init__(prox_config)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.p = finite_number(p, "p", minimum=1)
        finite_values(weights, "weights (v_i > 0 keeps R coercive)", strict=True)
        weights = torch.as_tensor(weights, dtype=torch.get_default_dtype())
        if weights.ndim > 3 or (weights.ndim == 3 and weights.shape[0] not in (1, in_channels)):
            raise ValueError(f"weights must be a number or broadcast to ({in_channels}, H, W), got shape "
                             f"{tuple(weights.shape)}")
        if network is not None and not isinstance(network, nn.Module):
            raise TypeError(f"network must be None or a torch.nn.Module, got {type(network).__name__}")
        self.register_buffer("weights", weights)
        self.network = network if network is not None else BoundedUNet(in_channels, width, depth, bound,
                                                                         smoothing=smoothing)

    def phi(self, x: Tensor) -> Tensor:
        r"""The artefact map :math:`\Phi(x) = x - D(x)`, shape of ``x``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        """
        self.check_input(x)
        return x - self.network(x)

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`R(x)` of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        artefact = self.phi(x)
        return (self.weights.to(x.dtype) * artefact.abs().pow(self.p)).sum(dim=(1, 2, 3))

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A 4-channel, one-level, smoothed NETT in float64 on two 8x8 images, for
        :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = cls(width=4, depth=1, smoothing=0.1).double()
        return {"prior": prior, "x": torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)}
