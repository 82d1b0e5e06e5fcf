r"""Weighted :math:`\ell_1` prior in an orthonormal (periodised) wavelet basis, in pure PyTorch.

deepinv's :class:`deepinv.optim.WaveletPrior` and :class:`deepinv.models.WaveletDenoiser` need the ``ptwt``
package, which is not a dependency of deepinv-ext. This module implements the periodised orthonormal discrete
wavelet transform :math:`\Psi` with strided convolutions (filters from PyWavelets when it is installed; the Haar
filters are built in), so that the proximal operator of

.. math::

    g(x) = \sum_{j=1}^{J} \sum_{o \in \{h, v, d\}} w_{j,o} \, \|(\Psi x)_{j,o}\|_1

is exact and cheap: :math:`\operatorname{prox}_{\gamma g}(x) = \Psi^\top \operatorname{soft}(\Psi x, \gamma w)`
(the approximation band is not penalised). It is firmly nonexpansive (a proximal operator), which makes a
forward-backward layer built on it averaged, hence a fixed-point-convergent ReTune layer
(:class:`deepinv_ext.algorithms.ForwardBackwardLayer`).
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
import torch.nn.functional as F

from deepinv_ext._validation import boolean, check_dtype, check_tensor, finite_number, positive_int
from deepinv_ext.priors.filter_bank import nan_preserving_sign
from deepinv_ext.priors.smooth import per_image_gamma

__all__ = ["OrthoWavelet2d", "WaveletL1Prior"]


def _filters(wavelet: str) -> tuple[list[float], list[float]]:
    """Low-pass and high-pass orthonormal filters (correlation convention)."""
    if not isinstance(wavelet, str):
        raise TypeError(f"wavelet must be the name of an orthogonal wavelet such as 'haar' or 'db2', got "
                        f"{type(wavelet).__name__} {wavelet!r}")
    if wavelet == "haar":
        s = 1.0 / math.sqrt(2.0)
        return [s, s], [s, -s]
    try:
        import pywt
    except ImportError as exc:  # pragma: no cover - pywt ships with scikit-image's stack
        raise ValueError(f"wavelet={wavelet!r} needs PyWavelets (pip install PyWavelets); 'haar' works without") from exc
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"wavelet must name a discrete PyWavelets wavelet such as 'haar', 'db2' or 'sym4', got "
                         f"{wavelet!r}")
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(f"wavelet must be orthogonal (an orthonormal basis), got {wavelet!r}")
    return list(w.rec_lo), list(w.rec_hi)


class OrthoWavelet2d(torch.nn.Module):
    r"""Periodised orthonormal 2D discrete wavelet transform :math:`\Psi` and its inverse :math:`\Psi^\top`.

    One level maps an image ``(B, C, H, W)`` to the approximation ``(B, C, H/2, W/2)`` and the details
    ``(B, C, 3, H/2, W/2)`` (horizontal, vertical, diagonal) with circular boundary conditions, so that
    :math:`\Psi^\top \Psi = \Psi \Psi^\top = \operatorname{Id}` exactly.

    It has no parameters and computes in the dtype of its input (its filters are kept in float64 and cast).

    :param int level: number of decomposition levels :math:`J`; ``H`` and ``W`` must be divisible by :math:`2^J`.
    :param str wavelet: an orthogonal PyWavelets name (``"haar"``, ``"db2"``, ``"sym4"``, ...).
    :raises ValueError: ``level`` not an integer >= 1, an unknown or non-orthogonal ``wavelet``.
    :raises TypeError: ``wavelet`` not a string.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors import OrthoWavelet2d
    >>> psi = OrthoWavelet2d(level=2, wavelet="db2")
    >>> x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    >>> approx, details = psi(x)
    >>> approx.shape, [tuple(d.shape) for d in details]
    (torch.Size([1, 1, 4, 4]), [(1, 1, 3, 8, 8), (1, 1, 3, 4, 4)])
    >>> torch.allclose(psi.inverse(approx, details), x)  # orthonormal: the inverse is the adjoint
    True
    """

    def __init__(self, level: int = 3, wavelet: str = "haar"):
        super().__init__()
        self.level, self.wavelet = positive_int(level, "level"), wavelet
        lo, hi = _filters(wavelet)
        lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
        bank = torch.stack([torch.outer(a, b) for a, b in ((lo_t, lo_t), (hi_t, lo_t), (lo_t, hi_t), (hi_t, hi_t))])
        # float64 master copy (cast to the input dtype at use) so float64 checks stay exact
        self.register_buffer("bank", bank[:, None], persistent=False)  # (4, 1, K, K): LL, LH, HL, HH

    def _check(self, x: torch.Tensor) -> None:
        check_tensor(x, "x", ndim=4, what="(B, C, H, W)")
        m = 2**self.level
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"x: H and W must be divisible by 2**level = {m}, got {tuple(x.shape[-2:])}")

    def _analysis(self, x: torch.Tensor) -> torch.Tensor:
        k = self.bank.shape[-1]
        b, c, h, w = x.shape
        z = x.reshape(b * c, 1, h, w)
        z = F.pad(z, (0, k - 2, 0, k - 2), mode="circular") if k > 2 else z
        out = F.conv2d(z, self.bank.to(x.dtype), stride=2)
        return out.reshape(b, c, 4, h // 2, w // 2)

    def _synthesis(self, coeffs: torch.Tensor) -> torch.Tensor:
        k = self.bank.shape[-1]
        b, c, _, h2, w2 = coeffs.shape
        z = F.conv_transpose2d(coeffs.reshape(b * c, 4, h2, w2), self.bank.to(coeffs.dtype), stride=2)
        h, w = 2 * h2, 2 * w2
        if k > 2:  # adjoint of the circular padding: fold the overflow back onto the start
            z = z.clone()
            z[..., : k - 2, :] += z[..., h:, :]
            z = z[..., :h, :]
            z[..., :, : k - 2] += z[..., :, w:]
            z = z[..., :, :w]
        return z.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        r"""Decompose, :math:`\Psi x`.

        :param torch.Tensor x: images ``(B, C, H, W)``, ``H`` and ``W`` divisible by :math:`2^J`.
        :return: the approximation ``(B, C, H/2^J, W/2^J)`` and the list of details, finest level first, each
            ``(B, C, 3, H/2^j, W/2^j)``.
        """
        self._check(x)
        details = []
        a = x
        for _ in range(self.level):
            out = self._analysis(a)
            a, d = out[:, :, 0], out[:, :, 1:]
            details.append(d)
        return a, details

    def inverse(self, approx: torch.Tensor, details: list[torch.Tensor]) -> torch.Tensor:
        r"""Reconstruct, :math:`\Psi^\top (a, d)`.

        :param torch.Tensor approx: the approximation :math:`a`, as :meth:`forward` returns it.
        :param list[torch.Tensor] details: the details :math:`d`, finest level first, as :meth:`forward` returns them.
        :return: (:class:`torch.Tensor`) the images ``(B, C, H, W)``.
        """
        if len(details) != self.level:
            raise ValueError(f"details must hold {self.level} levels, got {len(details)}")
        a = approx
        for d in reversed(details):
            a = self._synthesis(torch.cat([a[:, :, None], d], dim=2))
        return a


def _soft(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.relu(x.abs() - t)


class WaveletL1Prior(dinv.optim.Prior):
    r"""Weighted :math:`\ell_1` norm of the detail coefficients in an orthonormal wavelet basis.

    .. math::

        g(x) = \sum_{j=1}^{J} \sum_{o} w_{j,o} \|(\Psi x)_{j,o}\|_1,
        \qquad \operatorname{prox}_{\gamma g}(x) = \Psi^\top \operatorname{soft}_{\gamma w}(\Psi x),

    with :math:`\Psi` the periodised orthonormal DWT of :class:`OrthoWavelet2d` and positive weights
    :math:`w_{j,o} = \exp(\theta_{j,o})` (one per level and orientation), trainable when ``trainable=True``.
    The prox is exact and firmly nonexpansive. Use it in deepinv's ``PGD``/``unfolded_builder``
    (``prox(x, g_param, gamma=...)``) or in :class:`deepinv_ext.algorithms.ForwardBackwardLayer`.

    ``fn``, ``grad`` and ``prox`` take images ``(B, C, H, W)`` (any ``C``, ``H`` and ``W`` divisible by
    :math:`2^J`) in the precision of the weights: another floating precision is refused, never cast.

    :param int level: number of wavelet levels :math:`J`.
    :param str wavelet: orthogonal wavelet name (``"haar"`` needs nothing; others need PyWavelets).
    :param float weight: initial weight of every band (finite, > 0).
    :param bool trainable: make the log-weights an ``nn.Parameter``.
    :raises ValueError: ``level`` not an integer >= 1, ``weight`` not finite and > 0, an unknown ``wavelet``.
    :raises TypeError: ``trainable`` not a bool, ``wavelet`` not a string.

    |sep|

    :Examples:

    The prox shrinks the detail coefficients, and lowers the energy:

    >>> import torch
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> prior = WaveletL1Prior(level=2, weight=0.1)
    >>> x = torch.rand(1, 1, 8, 8)
    >>> bool(prior.fn(prior.prox(x, gamma=0.5)) <= prior.fn(x))
    True
    """

    def __init__(self, level: int = 3, wavelet: str = "haar", weight: float = 1.0, trainable: bool = True):
        super().__init__()
        weight = finite_number(weight, "weight", strict=True)
        boolean(trainable, "trainable")
        self.explicit_prior = True
        self.transform = OrthoWavelet2d(level, wavelet)
        log_w = torch.full((self.transform.level, 3), math.log(weight))
        self.log_weight = torch.nn.Parameter(log_w, requires_grad=trainable)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        return {"prior": cls(level=2, wavelet="haar", weight=0.5), "x": torch.randn(2, 1, 8, 8, generator=g)}

    @property
    def weights(self) -> torch.Tensor:
        """Positive band weights :math:`w_{j,o}`, shape ``(J, 3)``."""
        return self.log_weight.exp()

    def _analysis(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tensor(x, "x")
        check_dtype(x, self)
        return self.transform(x)

    def fn(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        r"""Energy :math:`g(x)` per batch element, shape ``(B,)``.

        :param torch.Tensor x: images ``(B, C, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        _, details = self._analysis(x)
        w = self.weights
        return sum((w[j].view(1, 1, 3, 1, 1) * d.abs()).flatten(1).sum(-1) for j, d in enumerate(details))

    def grad(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        r"""The subgradient :math:`\Psi^\top (0, w \operatorname{sign}(\Psi x)_{\text{details}})` (0 where a
        coefficient is 0; NaN where it is NaN), same shape as ``x``, differentiable in the weights.

        :param torch.Tensor x: images ``(B, C, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        a, details = self._analysis(x)
        w = self.weights
        slopes = [w[j].view(1, 1, 3, 1, 1) * nan_preserving_sign(d) for j, d in enumerate(details)]
        return self.transform.inverse(torch.zeros_like(a), slopes)

    def prox(self, x: torch.Tensor, *args, gamma: float | torch.Tensor = 1.0, **kwargs) -> torch.Tensor:
        r"""Exact proximal operator :math:`\Psi^\top \operatorname{soft}_{\gamma w}(\Psi x)`.

        Positional arguments after ``x`` (deepinv's iterators pass ``g_param``) and unknown keywords are ignored.

        :param torch.Tensor x: image ``(B, C, H, W)``.
        :param args: ignored.
        :param float, torch.Tensor gamma: step :math:`\gamma \ge 0`: a number, or a tensor of one value or one per image (e.g.
            ``(B, 1, 1, 1)``).
        :param kwargs: ignored.
        :raises ValueError: ``gamma`` negative, not finite or of the wrong size (a negative step would expand the
            image instead of shrinking it).
        """
        a, details = self._analysis(x)
        w = self.weights
        gamma = per_image_gamma(gamma, x).reshape(-1, 1, 1, 1, 1)
        shrunk = [_soft(d, gamma * w[j].view(1, 1, 3, 1, 1)) for j, d in enumerate(details)]
        return self.transform.inverse(a, shrunk)
